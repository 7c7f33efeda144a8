//! The machine runtime's RPCs for the tests, one helper each: request builders, calls, and
//! waits for a machine's state, volumes and NICs.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use iri_spec::machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient};
use tonic::transport::Channel;

/// The machine class of [`spec`] (1 CPU, 128 MiB).
pub const CLASS: &str = "small";

pub type Client = MachineRuntimeClient<Channel>;

pub fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn machine_request(spec: machine::MachineSpec) -> machine::CreateMachineRequest {
    machine::CreateMachineRequest {
        machine: Some(machine::Machine {
            metadata: Some(iri_spec::meta::v1alpha1::ObjectMetadata {
                labels: labels(&[("test", "yes")]),
                annotations: labels(&[("note", "kept")]),
                ..Default::default()
            }),
            spec: Some(spec),
            status: None,
        }),
    }
}

pub fn spec(volumes: Vec<machine::Volume>) -> machine::MachineSpec {
    machine::MachineSpec {
        class: CLASS.into(),
        volumes,
        ..Default::default()
    }
}

pub fn file_volume(name: &str, handle: &str) -> machine::Volume {
    machine::Volume {
        name: name.into(),
        device: "oda".into(),
        local_disk: None,
        connection: Some(machine::VolumeConnection {
            driver: "local-file".into(),
            handle: handle.into(),
            ..Default::default()
        }),
    }
}

pub fn local_disk(name: &str, size: i64) -> machine::Volume {
    machine::Volume {
        name: name.into(),
        device: "odb".into(),
        local_disk: Some(machine::LocalDisk {
            size_bytes: size,
            image: None,
        }),
        connection: None,
    }
}

pub async fn get(client: &mut Client, id: &str) -> Option<machine::Machine> {
    client
        .list_machines(machine::ListMachinesRequest {
            filter: Some(machine::MachineFilter {
                id: id.into(),
                label_selector: HashMap::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .machines
        .pop()
}

pub fn state_of(m: &machine::Machine) -> machine::MachineState {
    machine::MachineState::try_from(m.status.as_ref().unwrap().state).unwrap()
}

/// Wait until the machine reaches `state`; returns it.
pub async fn wait_state(
    client: &mut Client,
    id: &str,
    state: machine::MachineState,
) -> machine::Machine {
    let timeout = Duration::from_secs(30);
    let deadline = Instant::now() + timeout;
    loop {
        let m = get(client, id).await.expect("machine listed");
        if state_of(&m) == state {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "machine {id} stuck in {:?}, want {state:?}",
            state_of(&m)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Wait until the machine is no longer listed.
pub async fn wait_gone(client: &mut Client, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(client, id).await.is_some() {
        assert!(Instant::now() < deadline, "machine {id} not deleted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Poll until NIC `name` of machine `id` is (not) attached; returns the machine.
pub async fn wait_for_nic(
    client: &mut Client,
    id: &str,
    name: &str,
    attached: bool,
) -> machine::Machine {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = get(client, id).await.expect("machine exists");
        let nic = m
            .status
            .as_ref()
            .and_then(|s| s.network_interfaces.iter().find(|n| n.name == name));
        let now = nic.is_some_and(|n| {
            n.state == machine::NetworkInterfaceState::NetworkInterfaceAttached as i32
                && !n.handle.is_empty()
        });
        if now == attached {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "nic {name} of {id} not attached={attached}: {nic:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A volume status by name: (handle, attached).
pub fn volume_status(m: &machine::Machine, name: &str) -> Option<(String, bool)> {
    m.status
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .find(|v| v.name == name)
        .map(|v| {
            (
                v.handle.clone(),
                v.state == machine::VolumeState::VolumeAttached as i32,
            )
        })
}

/// The labels of a request's machine, to add to.
pub fn labels_mut(request: &mut machine::CreateMachineRequest) -> &mut HashMap<String, String> {
    &mut request
        .machine
        .as_mut()
        .unwrap()
        .metadata
        .as_mut()
        .unwrap()
        .labels
}

/// The id of a machine.
pub fn id_of(m: &machine::Machine) -> String {
    m.metadata.as_ref().unwrap().id.clone()
}

/// CreateMachine of `request`; the machine as answered.
pub async fn create_request(
    client: &mut Client,
    request: machine::CreateMachineRequest,
) -> machine::Machine {
    client
        .create_machine(request)
        .await
        .unwrap()
        .into_inner()
        .machine
        .unwrap()
}

/// CreateMachine of `spec` (with [`machine_request`]'s labels); the new machine's id.
pub async fn create(client: &mut Client, spec: machine::MachineSpec) -> String {
    id_of(&create_request(client, machine_request(spec)).await)
}

/// A machine of class [`CLASS`] with `volumes`, once RUNNING; its id.
pub async fn create_running(client: &mut Client, volumes: Vec<machine::Volume>) -> String {
    let id = create(client, spec(volumes)).await;
    wait_state(client, &id, machine::MachineState::MachineRunning).await;
    id
}

/// Every machine listed.
pub async fn list_all(client: &mut Client) -> Vec<machine::Machine> {
    client
        .list_machines(machine::ListMachinesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .machines
}

/// UpdateMachinePower.
pub async fn set_power(client: &mut Client, id: &str, power: machine::Power) {
    client
        .update_machine_power(machine::UpdateMachinePowerRequest {
            machine_id: id.to_owned(),
            power: power as i32,
        })
        .await
        .unwrap();
}

/// DeleteMachine.
pub async fn delete(client: &mut Client, id: &str) {
    client
        .delete_machine(machine::DeleteMachineRequest {
            machine_id: id.to_owned(),
        })
        .await
        .unwrap();
}

/// DeleteMachine, then wait until it is no longer listed.
pub async fn delete_and_wait(client: &mut Client, id: &str) {
    delete(client, id).await;
    wait_gone(client, id).await;
}

/// AttachVolume.
pub async fn attach_volume(client: &mut Client, id: &str, volume: machine::Volume) {
    client
        .attach_volume(machine::AttachVolumeRequest {
            machine_id: id.to_owned(),
            volume: Some(volume),
        })
        .await
        .unwrap();
}

/// DetachVolume.
pub async fn detach_volume(client: &mut Client, id: &str, name: &str) {
    client
        .detach_volume(machine::DetachVolumeRequest {
            machine_id: id.to_owned(),
            name: name.to_owned(),
        })
        .await
        .unwrap();
}

/// A NIC on network `net` with one address.
pub fn nic(name: &str) -> machine::NetworkInterface {
    machine::NetworkInterface {
        name: name.to_owned(),
        network_id: "net".into(),
        ips: vec!["10.0.0.2".into()],
        ..Default::default()
    }
}

/// AttachNetworkInterface of [`nic`]`(name)`.
pub async fn attach_nic(client: &mut Client, id: &str, name: &str) {
    client
        .attach_network_interface(machine::AttachNetworkInterfaceRequest {
            machine_id: id.to_owned(),
            network_interface: Some(nic(name)),
        })
        .await
        .unwrap();
}

/// DetachNetworkInterface.
pub async fn detach_nic(client: &mut Client, id: &str, name: &str) {
    client
        .detach_network_interface(machine::DetachNetworkInterfaceRequest {
            machine_id: id.to_owned(),
            name: name.to_owned(),
        })
        .await
        .unwrap();
}

/// The reasons of the events about machine `id`, oldest first.
pub async fn event_reasons(client: &mut Client, id: &str) -> Vec<String> {
    client
        .list_events(machine::ListEventsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .events
        .iter()
        .filter_map(|e| e.spec.as_ref())
        .filter(|s| s.involved_object_meta.as_ref().is_some_and(|m| m.id == id))
        .map(|s| s.reason.clone())
        .collect()
}

/// Poll machine `id` every 5 ms until `check` returns Some, or panic after `timeout`.
pub async fn wait_machine<T>(
    client: &Client,
    id: &str,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut(&machine::Machine) -> Option<T>,
) -> T {
    let mut client = client.clone();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = get(&mut client, id).await.as_ref().and_then(&mut check) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What [`wait_volume`] waits for; either at the machine's current generation (observed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeIs {
    /// Attached in the status.
    Attached,
    /// Neither in the spec nor in the status.
    Gone,
}

/// Wait until volume `name` of machine `id` is `want` and the runtime has observed the
/// machine's current generation; returns the machine.
pub async fn wait_volume(
    client: &Client,
    id: &str,
    name: &str,
    want: VolumeIs,
    timeout: Duration,
) -> machine::Machine {
    let what = format!("volume {name} {want:?}");
    wait_machine(client, id, &what, timeout, |m| {
        let observed = m.status.as_ref()?.observed_generation == m.metadata.as_ref()?.generation;
        let now = match want {
            VolumeIs::Attached => volume_status(m, name).is_some_and(|(_, a)| a),
            VolumeIs::Gone => {
                volume_status(m, name).is_none()
                    && !m.spec.as_ref()?.volumes.iter().any(|v| v.name == name)
            }
        };
        (observed && now).then(|| m.clone())
    })
    .await
}
