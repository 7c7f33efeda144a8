//! The pure mapping between IRI objects and the lower plane's api objects (no IO).
//!
//! An IRI machine is one lower `Machine` named after its IRI id, in the broker's namespace:
//! class → `machineClassRef`, power → `power`, hostname → `guestConfig`, ignition → a Secret
//! `<id>-ignition` (`ignitionRef`), a local disk → `localDisk`, a connection volume → a
//! pre-provisioned, already claimed `Volume` `<id>-<volume>` whose status carries the access
//! (driver, handle, attributes; secret and encryption data in Secrets), a NIC → an ephemeral
//! NIC template (`networkRef` = the IRI `network_id`, literal IPs, attributes). The IRI labels
//! and annotations are kept verbatim as JSON in the lower Machine's annotations (as IronCore's
//! machinebroker does), with the IRI `created_at`; status comes from the lower status.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use iri_spec::{machine::v1alpha1 as machine, meta::v1alpha1 as meta};
use irikit_api::{
    Quantity,
    compute::{self, Machine},
    core::Secret,
    meta::{LocalObjectReference, ObjectMeta},
    quantity::Format,
    storage,
};

use crate::error::{Result, invalid};

/// Label on every lower object the broker creates (`"true"`).
pub const MANAGED_LABEL: &str = "machinebroker.irikit.dev/managed";
/// Label on a lower Volume or Secret: the lower Machine it belongs to.
pub const MACHINE_LABEL: &str = "machinebroker.irikit.dev/machine";
/// Lower annotation: the IRI labels as a JSON object.
pub const LABELS_ANNOTATION: &str = "machinebroker.irikit.dev/labels";
/// Lower annotation: the IRI annotations as a JSON object.
pub const ANNOTATIONS_ANNOTATION: &str = "machinebroker.irikit.dev/annotations";
/// Lower annotation: the IRI device of each volume, as a JSON object (the lower API allows a
/// device name once per Machine and only of its form; IRI devices are kept here verbatim).
pub const DEVICES_ANNOTATION: &str = "machinebroker.irikit.dev/devices";
/// Lower annotation: the IRI `created_at` (Unix nanoseconds).
pub const CREATED_AT_ANNOTATION: &str = "machinebroker.irikit.dev/created-at";
/// The ignition key in the ignition Secret (IronCore's default).
pub const IGNITION_KEY: &str = "ignition.yaml";

/// The name of the ignition Secret of lower Machine `name`.
pub fn ignition_secret_name(name: &str) -> String {
    format!("{name}-ignition")
}

/// The name of the lower Volume of connection volume `volume` of lower Machine `name`.
pub fn volume_object_name(name: &str, volume: &str) -> String {
    format!("{name}-{volume}")
}

/// The name of the access Secret of lower Volume `volume_object`.
pub fn access_secret_name(volume_object: &str) -> String {
    format!("{volume_object}-access")
}

/// The name of the encryption Secret of lower Volume `volume_object`.
pub fn encryption_secret_name(volume_object: &str) -> String {
    format!("{volume_object}-encryption")
}

/// A fresh id for a lower object: 32 lowercase hex characters whose first 12 are not all
/// digits (a DNS label, and IronCore's idgen rule).
pub fn new_id() -> String {
    loop {
        let id = format!("{:032x}", rand::random::<u128>());
        if !id[..12].bytes().all(|b| b.is_ascii_digit()) {
            return id;
        }
    }
}

/// Unix nanoseconds now.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Unix nanoseconds of an RFC 3339 time (0 when absent or malformed).
pub fn rfc3339_nanos(time: Option<&str>) -> i64 {
    time.and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The metadata of a lower object the broker writes for an IRI object with metadata `md`:
/// `namespace/name`, the managed label, and the IRI labels, annotations and creation time as
/// annotations.
pub fn lower_meta(namespace: &str, name: &str, md: &meta::ObjectMetadata) -> ObjectMeta {
    let mut lower = ObjectMeta::namespaced(namespace, name);
    lower
        .labels
        .insert(MANAGED_LABEL.to_owned(), "true".to_owned());
    lower.annotations.extend([
        (LABELS_ANNOTATION.to_owned(), to_json(&md.labels)),
        (ANNOTATIONS_ANNOTATION.to_owned(), to_json(&md.annotations)),
        (CREATED_AT_ANNOTATION.to_owned(), now_nanos().to_string()),
    ]);
    lower
}

/// The IRI status entries of a lower Machine's volume or NIC statuses: `make(name, handle,
/// state)` with `attached` or `pending` for the state.
fn attachment_statuses<S>(
    statuses: &[compute::AttachmentStatus],
    [attached, pending]: [i32; 2],
    make: impl Fn(String, String, i32) -> S,
) -> Vec<S> {
    statuses
        .iter()
        .map(|s| {
            let state = if s.state == "Attached" {
                attached
            } else {
                pending
            };
            make(s.name.clone(), s.handle.clone(), state)
        })
        .collect()
}

/// A string map as a JSON object.
pub fn to_json(map: &HashMap<String, String>) -> String {
    let sorted: BTreeMap<&String, &String> = map.iter().collect();
    serde_json::to_string(&sorted).unwrap_or_else(|_| "{}".to_owned())
}

/// A JSON object as a string map (empty when absent or malformed).
pub fn from_json(json: Option<&String>) -> HashMap<String, String> {
    json.and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default()
}

/// Checks an IRI volume: a name and exactly one source, non-negative sizes.
pub fn validate_volume(vol: &machine::Volume) -> Result<()> {
    if vol.name.is_empty() {
        return Err(invalid("volume name is required"));
    }
    match (&vol.local_disk, &vol.connection) {
        (Some(_), Some(_)) => Err(invalid(format!(
            "volume {:?} has both local_disk and connection: set exactly one",
            vol.name
        ))),
        (None, None) => Err(invalid(format!(
            "volume {:?} has neither local_disk nor connection: set exactly one",
            vol.name
        ))),
        (Some(disk), None) if disk.size_bytes < 0 => Err(invalid(format!(
            "volume {:?} has a negative local disk size",
            vol.name
        ))),
        (None, Some(c)) if c.effective_storage_bytes < 0 => Err(invalid(format!(
            "volume {:?} has a negative effective_storage_bytes",
            vol.name
        ))),
        _ => Ok(()),
    }
}

/// Checks an IRI NIC: a name.
pub fn validate_nic(nic: &machine::NetworkInterface) -> Result<()> {
    if nic.name.is_empty() {
        return Err(invalid("network interface name is required"));
    }
    Ok(())
}

/// The api power of an IRI power value.
pub fn power_of(value: i32) -> Result<compute::Power> {
    match machine::Power::try_from(value) {
        Ok(machine::Power::On) => Ok(compute::Power::On),
        Ok(machine::Power::Off) => Ok(compute::Power::Off),
        Err(_) => Err(invalid(format!("unknown power value {value}"))),
    }
}

/// The lower machine volume of an IRI volume (a connection volume refers to its lower Volume).
pub fn machine_volume(name: &str, vol: &machine::Volume) -> compute::Volume {
    let device = (!vol.device.is_empty()).then(|| vol.device.clone());
    match &vol.local_disk {
        Some(disk) => compute::Volume {
            name: vol.name.clone(),
            device,
            local_disk: Some(compute::LocalDisk {
                size_limit: (disk.size_bytes > 0)
                    .then(|| Quantity::from_int(disk.size_bytes, Format::BinarySI)),
                image: disk
                    .image
                    .as_ref()
                    .map(|i| i.image.clone())
                    .unwrap_or_default(),
            }),
            ..compute::Volume::default()
        },
        None => compute::Volume {
            name: vol.name.clone(),
            device,
            volume_ref: Some(LocalObjectReference::new(volume_object_name(
                name, &vol.name,
            ))),
            ..compute::Volume::default()
        },
    }
}

/// Keeps each lower volume's device only where the lower API accepts it (its form, first use);
/// the IRI devices live in [`DEVICES_ANNOTATION`].
pub fn assign_devices(volumes: &mut [compute::Volume]) {
    let mut used = std::collections::HashSet::new();
    for v in volumes {
        if let Some(device) = &v.device
            && (!irikit_api::validation::is_device_name(device) || !used.insert(device.clone()))
        {
            v.device = None;
        }
    }
}

/// Sets the IRI device of volume `name` in `m`'s [`DEVICES_ANNOTATION`] (`None` removes it).
pub fn set_device(md: &mut ObjectMeta, name: &str, device: Option<&str>) {
    let mut devices = from_json(md.annotations.get(DEVICES_ANNOTATION));
    match device.filter(|d| !d.is_empty()) {
        Some(d) => {
            devices.insert(name.to_owned(), d.to_owned());
        }
        None => {
            devices.remove(name);
        }
    }
    md.annotations
        .insert(DEVICES_ANNOTATION.to_owned(), to_json(&devices));
}

/// The lower NIC of an IRI NIC: an ephemeral template.
pub fn machine_nic(nic: &machine::NetworkInterface) -> compute::NetworkInterface {
    compute::NetworkInterface {
        name: nic.name.clone(),
        network_interface_ref: None,
        ephemeral: Some(compute::EphemeralNetworkInterface {
            network_interface_template: Some(compute::NetworkInterfaceTemplate {
                spec: compute::NetworkInterfaceSpec {
                    network_ref: LocalObjectReference::new(&nic.network_id),
                    ip_families: Vec::new(),
                    ips: nic
                        .ips
                        .iter()
                        .map(|ip| compute::IpSource {
                            value: Some(ip.clone()),
                            ephemeral: None,
                        })
                        .collect(),
                    attributes: nic
                        .attributes
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                },
            }),
        }),
    }
}

/// The IRI NIC of a lower NIC (`None` for a NIC the broker did not write).
pub fn iri_nic(nic: &compute::NetworkInterface) -> Option<machine::NetworkInterface> {
    let spec = &nic
        .ephemeral
        .as_ref()?
        .network_interface_template
        .as_ref()?
        .spec;
    Some(machine::NetworkInterface {
        name: nic.name.clone(),
        network_id: spec.network_ref.name.clone(),
        ips: spec.ips.iter().filter_map(|ip| ip.value.clone()).collect(),
        attributes: spec
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// Labels of a dependent (Volume, Secret) of lower Machine `name`.
pub fn dependent_meta(namespace: &str, name: &str, object: &str) -> ObjectMeta {
    let mut md = ObjectMeta::namespaced(namespace, object);
    md.labels
        .insert(MANAGED_LABEL.to_owned(), "true".to_owned());
    md.labels.insert(MACHINE_LABEL.to_owned(), name.to_owned());
    md
}

/// A Secret holding `data` (base64, as Kubernetes stores it).
pub fn secret(md: ObjectMeta, data: &HashMap<String, Vec<u8>>) -> Secret {
    Secret {
        metadata: md,
        data: data
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    base64::engine::general_purpose::STANDARD.encode(v),
                )
            })
            .collect(),
        ..Secret::default()
    }
}

/// The bytes of a Secret (keys whose value is not base64 are left out).
pub fn secret_bytes(secret: &Secret) -> HashMap<String, Vec<u8>> {
    let mut out: HashMap<String, Vec<u8>> = secret
        .data
        .iter()
        .filter_map(|(k, v)| {
            base64::engine::general_purpose::STANDARD
                .decode(v)
                .ok()
                .map(|b| (k.clone(), b))
        })
        .collect();
    for (k, v) in &secret.string_data {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

/// The lower Volume of connection volume `vol` of lower Machine (`name`, `uid`): claimed by
/// it, without class or pool (so no scheduler or volumepoollet touches it), its status
/// `Available` with the access.
pub fn connection_volume(
    namespace: &str,
    name: &str,
    uid: &str,
    vol: &machine::Volume,
    conn: &machine::VolumeConnection,
) -> storage::Volume {
    let object = volume_object_name(name, &vol.name);
    let storage_bytes = |bytes: i64| {
        let mut list = irikit_api::ResourceList::new();
        if bytes > 0 {
            list.insert(
                "storage".to_owned(),
                Quantity::from_int(bytes, Format::BinarySI),
            );
        }
        list
    };
    storage::Volume {
        metadata: dependent_meta(namespace, name, &object),
        spec: storage::VolumeSpec {
            claim_ref: Some(storage::ClaimRef {
                name: name.to_owned(),
                uid: uid.to_owned(),
            }),
            resources: storage_bytes(conn.effective_storage_bytes),
            encryption: (!conn.encryption_data.is_empty()).then(|| storage::VolumeEncryption {
                secret_ref: LocalObjectReference::new(encryption_secret_name(&object)),
            }),
            ..storage::VolumeSpec::default()
        },
        status: storage::VolumeStatus {
            state: "Available".to_owned(),
            access: Some(storage::VolumeAccess {
                secret_ref: (!conn.secret_data.is_empty())
                    .then(|| LocalObjectReference::new(access_secret_name(&object))),
                driver: conn.driver.clone(),
                handle: conn.handle.clone(),
                volume_attributes: conn
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }),
            resources: storage_bytes(conn.effective_storage_bytes),
            ..storage::VolumeStatus::default()
        },
        ..storage::Volume::default()
    }
}

/// What the IRI view of lower Machines needs besides the Machine: its connection Volumes and
/// Secrets by name.
#[derive(Debug, Default)]
pub struct Dependents {
    /// Lower Volumes by name.
    pub volumes: HashMap<String, storage::Volume>,
    /// Lower Secrets by name.
    pub secrets: HashMap<String, Secret>,
}

impl Dependents {
    fn secret_bytes(&self, name: &str) -> HashMap<String, Vec<u8>> {
        self.secrets.get(name).map(secret_bytes).unwrap_or_default()
    }
}

/// The IRI state of a lower Machine's state.
pub fn iri_state(m: &Machine) -> machine::MachineState {
    if m.metadata.is_deleting() {
        return machine::MachineState::MachineTerminating;
    }
    match m.status.state.as_str() {
        "Running" => machine::MachineState::MachineRunning,
        "Shutdown" => machine::MachineState::MachineSuspended,
        "Terminated" => machine::MachineState::MachineTerminated,
        "Terminating" => machine::MachineState::MachineTerminating,
        _ => machine::MachineState::MachinePending,
    }
}

/// The IRI metadata of a lower Machine or Reservation.
pub fn iri_metadata(md: &ObjectMeta) -> meta::ObjectMetadata {
    let created_at = md
        .annotations
        .get(CREATED_AT_ANNOTATION)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rfc3339_nanos(md.creation_timestamp.as_deref()));
    let deleted_at = if md.is_deleting() {
        match rfc3339_nanos(md.deletion_timestamp.as_deref()) {
            0 => now_nanos(),
            t => t,
        }
    } else {
        0
    };
    meta::ObjectMetadata {
        id: md.name.clone(),
        annotations: from_json(md.annotations.get(ANNOTATIONS_ANNOTATION)),
        labels: from_json(md.annotations.get(LABELS_ANNOTATION)),
        generation: md.generation,
        created_at,
        deleted_at,
    }
}

/// The IRI machine of lower Machine `m`.
pub fn iri_machine(m: &Machine, deps: &Dependents) -> machine::Machine {
    let ignition_data = m
        .spec
        .ignition_ref
        .as_ref()
        .map(|r| {
            let key = if r.key.is_empty() {
                IGNITION_KEY
            } else {
                r.key.as_str()
            };
            deps.secret_bytes(&r.name).remove(key).unwrap_or_default()
        })
        .unwrap_or_default();
    let devices = from_json(m.metadata.annotations.get(DEVICES_ANNOTATION));
    let volumes = m
        .spec
        .volumes
        .iter()
        .filter_map(|v| {
            let mut vol = iri_volume(v, deps)?;
            if let Some(device) = devices.get(&v.name) {
                vol.device.clone_from(device);
            }
            Some(vol)
        })
        .collect();
    let network_interfaces = m
        .spec
        .network_interfaces
        .iter()
        .filter_map(iri_nic)
        .collect();
    machine::Machine {
        metadata: Some(iri_metadata(&m.metadata)),
        spec: Some(machine::MachineSpec {
            power: match m.spec.power {
                compute::Power::On => machine::Power::On as i32,
                compute::Power::Off => machine::Power::Off as i32,
            },
            class: m.spec.machine_class_ref.name.clone(),
            ignition_data,
            volumes,
            network_interfaces,
            guest_config: m.spec.guest_config.as_ref().map(|g| machine::GuestConfig {
                hostname: g.hostname.clone(),
            }),
        }),
        status: Some(machine::MachineStatus {
            observed_generation: m.status.observed_generation,
            state: iri_state(m) as i32,
            image_ref: String::new(),
            volumes: attachment_statuses(
                &m.status.volumes,
                [
                    machine::VolumeState::VolumeAttached as i32,
                    machine::VolumeState::VolumePending as i32,
                ],
                |name, handle, state| machine::VolumeStatus {
                    name,
                    handle,
                    state,
                },
            ),
            network_interfaces: attachment_statuses(
                &m.status.network_interfaces,
                [
                    machine::NetworkInterfaceState::NetworkInterfaceAttached as i32,
                    machine::NetworkInterfaceState::NetworkInterfacePending as i32,
                ],
                |name, handle, state| machine::NetworkInterfaceStatus {
                    name,
                    handle,
                    state,
                },
            ),
            machine_conditions: Vec::new(),
        }),
    }
}

/// The IRI volume of a lower machine volume (`None` for a source the broker does not write).
pub fn iri_volume(v: &compute::Volume, deps: &Dependents) -> Option<machine::Volume> {
    let device = v.device.clone().unwrap_or_default();
    if let Some(disk) = &v.local_disk {
        return Some(machine::Volume {
            name: v.name.clone(),
            device,
            local_disk: Some(machine::LocalDisk {
                size_bytes: disk
                    .size_limit
                    .map_or(0, |q| i64::try_from(q.value()).unwrap_or(i64::MAX)),
                image: (!disk.image.is_empty()).then(|| machine::ImageSpec {
                    image: disk.image.clone(),
                }),
            }),
            connection: None,
        });
    }
    let object = deps.volumes.get(&v.volume_ref.as_ref()?.name)?;
    let access = object.status.access.as_ref()?;
    let secret_data = access
        .secret_ref
        .as_ref()
        .map(|r| deps.secret_bytes(&r.name))
        .unwrap_or_default();
    let encryption_data = object
        .spec
        .encryption
        .as_ref()
        .map(|e| deps.secret_bytes(&e.secret_ref.name))
        .unwrap_or_default();
    let effective_storage_bytes = object
        .status
        .resources
        .get("storage")
        .map_or(0, |q| i64::try_from(q.value()).unwrap_or(i64::MAX));
    Some(machine::Volume {
        name: v.name.clone(),
        device,
        local_disk: None,
        connection: Some(machine::VolumeConnection {
            driver: access.driver.clone(),
            handle: access.handle.clone(),
            attributes: access
                .volume_attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            secret_data,
            encryption_data,
            effective_storage_bytes,
        }),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ids_are_dns_labels_not_starting_with_twelve_digits() {
        for _ in 0..200 {
            let id = new_id();
            assert!(irikit_api::validation::is_dns_label(&id), "{id}");
            assert!(!id[..12].bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn nic_and_local_disk_round_trip() {
        let nic = machine::NetworkInterface {
            name: "eth0".into(),
            network_id: "net-a".into(),
            ips: vec!["10.0.0.1".into()],
            attributes: [("k".to_owned(), "v".to_owned())].into(),
        };
        assert_eq!(iri_nic(&machine_nic(&nic)), Some(nic));
        let disk = machine::Volume {
            name: "root".into(),
            device: "oda".into(),
            local_disk: Some(machine::LocalDisk {
                size_bytes: 1 << 30,
                image: Some(machine::ImageSpec {
                    image: "img:1".into(),
                }),
            }),
            connection: None,
        };
        assert_eq!(
            iri_volume(&machine_volume("m", &disk), &Dependents::default()),
            Some(disk)
        );
    }

    #[test]
    fn connection_volume_round_trips_through_volume_and_secrets() {
        let conn = machine::VolumeConnection {
            driver: "ceph".into(),
            handle: "h".into(),
            attributes: [("monitors".to_owned(), "x".to_owned())].into(),
            secret_data: [("key".to_owned(), vec![0, 1, 2])].into(),
            encryption_data: [("enc".to_owned(), b"s".to_vec())].into(),
            effective_storage_bytes: 1 << 20,
        };
        let vol = machine::Volume {
            name: "data".into(),
            device: "odb".into(),
            local_disk: None,
            connection: Some(conn.clone()),
        };
        let object = connection_volume("ns", "m", "uid", &vol, &conn);
        let mut deps = Dependents::default();
        let access = access_secret_name(&object.metadata.name);
        let encryption = encryption_secret_name(&object.metadata.name);
        deps.secrets.insert(
            access.clone(),
            secret(ObjectMeta::named(&access), &conn.secret_data),
        );
        deps.secrets.insert(
            encryption.clone(),
            secret(ObjectMeta::named(&encryption), &conn.encryption_data),
        );
        deps.volumes.insert(object.metadata.name.clone(), object);
        assert_eq!(iri_volume(&machine_volume("m", &vol), &deps), Some(vol));
    }

    #[test]
    fn states_map_back_and_deleting_is_terminating() {
        let mut m = Machine::default();
        for (state, want) in [
            ("", machine::MachineState::MachinePending),
            ("Pending", machine::MachineState::MachinePending),
            ("Running", machine::MachineState::MachineRunning),
            ("Shutdown", machine::MachineState::MachineSuspended),
            ("Terminated", machine::MachineState::MachineTerminated),
        ] {
            m.status.state = state.into();
            assert_eq!(iri_state(&m), want, "{state}");
        }
        m.metadata.deletion_timestamp = Some("2026-01-01T00:00:00Z".into());
        assert_eq!(iri_state(&m), machine::MachineState::MachineTerminating);
        assert_eq!(
            iri_metadata(&m.metadata).deleted_at,
            1_767_225_600_000_000_000
        );
    }
}
