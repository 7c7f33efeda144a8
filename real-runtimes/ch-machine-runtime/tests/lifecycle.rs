//! End-to-end lifecycle of the CH machine runtime binary, on ch-sim (always) and on a real
//! cloud-hypervisor (when `IRIKIT_CH_BIN` names one and /dev/kvm opens).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Backend, Env};
use iri_spec::machine::v1alpha1::{self as machine, MachineState};

/// Volume from the volume runtime + a local disk: RUNNING, power off/on, detach/re-attach,
/// delete, and no VMM process left.
async fn lifecycle(backend: Backend) {
    let Some(env) = Env::new(backend, "halt") else {
        return;
    };
    let (_volumes, _vclient, handle) = common::file_volume_runtime(&env, 64 << 20).await;
    let runtime = env.start();
    let mut client = common::Client::new(runtime.channel().await);

    let created = client
        .create_machine(common::machine_request(common::spec(vec![
            common::file_volume("data", &handle),
            common::local_disk("scratch", 16 << 20),
        ])))
        .await
        .unwrap()
        .into_inner()
        .machine
        .unwrap();
    let id = created.metadata.as_ref().unwrap().id.clone();
    assert_eq!(common::state_of(&created), MachineState::MachinePending);

    let running = common::wait_state(&mut client, &id, MachineState::MachineRunning).await;
    let m = common::eventually("volumes attached", Duration::from_secs(20), || {
        let mut client = client.clone();
        let id = id.clone();
        async move {
            let m = common::get(&mut client, &id).await?;
            let ok = common::volume_status(&m, "data").is_some_and(|(_, a)| a)
                && common::volume_status(&m, "scratch").is_some_and(|(_, a)| a);
            ok.then_some(m)
        }
    })
    .await;
    assert_eq!(common::volume_status(&m, "data").unwrap().0, handle);
    assert!(
        common::volume_status(&m, "scratch")
            .unwrap()
            .0
            .ends_with("scratch.img")
    );
    assert_eq!(
        running.metadata.as_ref().unwrap().labels,
        common::labels(&[("test", "yes")])
    );
    common::eventually("serial banner", Duration::from_secs(10), || async {
        env.serial_log(&id)
            .contains("PVH-HELLO cmdline=halt")
            .then_some(())
    })
    .await;
    let first_pid = env.recorded_pid(&id).expect("vmm pid recorded");
    assert!(common::alive(first_pid));

    // Power off; detach the volume while the VM is off (no guest involved); power on.
    set_power(&mut client, &id, machine::Power::Off).await;
    let off = common::wait_state(&mut client, &id, MachineState::MachineTerminated).await;
    assert_eq!(off.spec.as_ref().unwrap().power, machine::Power::Off as i32);
    detach(&mut client, &id, "data").await;
    wait_volume(&mut client, &id, "data", Presence::Gone).await;
    set_power(&mut client, &id, machine::Power::On).await;
    common::wait_state(&mut client, &id, MachineState::MachineRunning).await;

    // Re-attach while running (hot-plug), then hot-unplug.
    attach(&mut client, &id, &handle).await;
    let m = wait_volume(&mut client, &id, "data", Presence::Attached).await;
    assert_eq!(common::state_of(&m), MachineState::MachineRunning);
    assert!(m.metadata.as_ref().unwrap().generation >= 4);
    detach(&mut client, &id, "data").await;
    wait_volume(&mut client, &id, "data", Presence::Gone).await;

    // The stub guest never acknowledges the ACPI eject, so Cloud Hypervisor (and ch-sim) keep
    // the unplugged disk's image locked until the VM shuts down: a re-attach now fails in the
    // VMM, and the runtime reports the volume as not attached (with a HotplugFailed event)
    // instead of pretending. A power cycle releases the lock and the volume attaches.
    attach(&mut client, &id, &handle).await;
    common::eventually("HotplugFailed event", Duration::from_secs(20), || {
        let mut client = client.clone();
        let id = id.clone();
        async move {
            let events = client
                .list_events(machine::ListEventsRequest::default())
                .await
                .ok()?
                .into_inner()
                .events;
            events
                .iter()
                .filter_map(|e| e.spec.as_ref())
                .any(|s| {
                    s.reason == "HotplugFailed"
                        && s.involved_object_meta.as_ref().is_some_and(|m| m.id == id)
                })
                .then_some(())
        }
    })
    .await;
    let m = common::get(&mut client, &id).await.unwrap();
    assert_eq!(
        common::volume_status(&m, "data"),
        Some((handle.clone(), false)),
        "a volume the VMM could not hot-plug is reported Pending"
    );
    set_power(&mut client, &id, machine::Power::Off).await;
    common::wait_state(&mut client, &id, MachineState::MachineTerminated).await;
    set_power(&mut client, &id, machine::Power::On).await;
    common::wait_state(&mut client, &id, MachineState::MachineRunning).await;
    wait_volume(&mut client, &id, "data", Presence::Attached).await;

    // Delete: TERMINATING while tearing down, repeated delete OK, then gone.
    let pid = env.recorded_pid(&id).expect("vmm pid recorded");
    client
        .delete_machine(machine::DeleteMachineRequest {
            machine_id: id.clone(),
        })
        .await
        .unwrap();
    if let Some(m) = common::get(&mut client, &id).await {
        assert!(m.metadata.as_ref().unwrap().deleted_at > 0);
        assert_eq!(common::state_of(&m), MachineState::MachineTerminating);
        let again = client
            .delete_machine(machine::DeleteMachineRequest {
                machine_id: id.clone(),
            })
            .await;
        assert!(
            again.is_ok()
                || again
                    .as_ref()
                    .is_err_and(|s| s.code() == tonic::Code::NotFound),
            "{again:?}"
        );
    }
    common::wait_gone(&mut client, &id).await;
    assert!(!common::alive(pid), "vmm {pid} survived delete");
    assert!(!common::alive(first_pid));
    assert_eq!(env.vmm_processes(), Vec::<i32>::new(), "vmm processes left");
    assert!(
        !env.state_dir.join("vms").join(&id).exists(),
        "machine dir left"
    );
    assert!(
        std::path::Path::new(&handle).exists(),
        "the volume runtime's file must survive machine delete"
    );

    // Events for create, boot, power and delete.
    let events = client
        .list_events(machine::ListEventsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .events;
    let reasons: Vec<String> = events
        .iter()
        .filter_map(|e| e.spec.as_ref())
        .filter(|s| s.involved_object_meta.as_ref().is_some_and(|m| m.id == id))
        .map(|s| s.reason.clone())
        .collect();
    for want in ["Created", "Booted", "PowerOff", "PowerOn", "Deleted"] {
        assert!(
            reasons.iter().any(|r| r == want),
            "no {want} event in {reasons:?}"
        );
    }
}

on_ch_sim_and_real_ch! {
    lifecycle_on_ch_sim,
    lifecycle_on_real_ch => lifecycle;
}

/// A guest that powers itself off (the VMM exits 0) is TERMINATED, not an error; power on
/// starts it again.
async fn guest_power_off(backend: Backend) {
    let Some(env) = Env::new(backend, "poweroff") else {
        return;
    };
    let runtime = env.start();
    let mut client = common::Client::new(runtime.channel().await);
    let id = common::create_machine(&mut client, common::spec(vec![])).await;
    common::eventually("guest ran", Duration::from_secs(20), || async {
        env.serial_log(&id)
            .contains("PVH-HELLO cmdline=poweroff")
            .then_some(())
    })
    .await;
    common::wait_state(&mut client, &id, MachineState::MachineTerminated).await;
    common::eventually("vmm exited", Duration::from_secs(10), || async {
        env.vmm_processes().is_empty().then_some(())
    })
    .await;
    client
        .update_machine_power(machine::UpdateMachinePowerRequest {
            machine_id: id.clone(),
            power: machine::Power::On as i32,
        })
        .await
        .unwrap();
    common::eventually("guest ran again", Duration::from_secs(20), || async {
        (env.serial_log(&id).matches("PVH-HELLO").count() >= 2).then_some(())
    })
    .await;
    common::wait_state(&mut client, &id, MachineState::MachineTerminated).await;
    common::delete_and_wait_gone(&mut client, &id).await;
    assert_eq!(env.vmm_processes(), Vec::<i32>::new());
}

on_ch_sim_and_real_ch! {
    guest_power_off_on_ch_sim,
    guest_power_off_on_real_ch => guest_power_off;
}

/// kill -9 the runtime with 3 machines running; a restarted runtime lists them with their
/// state and stops their VMMs on delete.
async fn kill9_adoption(backend: Backend) {
    let Some(env) = Env::new(backend, "halt") else {
        return;
    };
    let mut runtime = env.start();
    let mut client = common::Client::new(runtime.channel().await);
    let mut ids = Vec::new();
    for n in 0..3 {
        let mut request =
            common::machine_request(common::spec(vec![common::local_disk("root", 8 << 20)]));
        let labels = &mut request
            .machine
            .as_mut()
            .unwrap()
            .metadata
            .as_mut()
            .unwrap()
            .labels;
        labels.insert("n".into(), n.to_string());
        let m = client.create_machine(request).await.unwrap().into_inner();
        ids.push(m.machine.unwrap().metadata.unwrap().id);
    }
    for id in &ids {
        common::wait_state(&mut client, id, MachineState::MachineRunning).await;
    }
    // Power one off so that "correct state" covers more than RUNNING.
    client
        .update_machine_power(machine::UpdateMachinePowerRequest {
            machine_id: ids[2].clone(),
            power: machine::Power::Off as i32,
        })
        .await
        .unwrap();
    common::wait_state(&mut client, &ids[2], MachineState::MachineTerminated).await;
    let before = client
        .list_machines(machine::ListMachinesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .machines;
    let pids: Vec<i32> = ids.iter().map(|id| env.recorded_pid(id).unwrap()).collect();

    runtime.kill9();
    drop(client);
    for pid in &pids {
        assert!(common::alive(*pid), "vmm {pid} died with the runtime");
    }

    let runtime = env.start();
    let mut client = common::Client::new(runtime.channel().await);
    let after = client
        .list_machines(machine::ListMachinesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .machines;
    assert_eq!(after.len(), 3);
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old.metadata, new.metadata);
        assert_eq!(old.spec, new.spec);
        assert_eq!(common::state_of(old), common::state_of(new));
    }
    assert_eq!(common::state_of(&after[0]), MachineState::MachineRunning);
    assert_eq!(common::state_of(&after[2]), MachineState::MachineTerminated);
    for (id, pid) in ids.iter().zip(&pids) {
        assert_eq!(env.recorded_pid(id), Some(*pid), "vmm was not adopted");
    }
    // The adopted VMMs still obey: power the stopped one on again.
    client
        .update_machine_power(machine::UpdateMachinePowerRequest {
            machine_id: ids[2].clone(),
            power: machine::Power::On as i32,
        })
        .await
        .unwrap();
    common::wait_state(&mut client, &ids[2], MachineState::MachineRunning).await;

    for id in &ids {
        client
            .delete_machine(machine::DeleteMachineRequest {
                machine_id: id.clone(),
            })
            .await
            .unwrap();
    }
    for id in &ids {
        common::wait_gone(&mut client, id).await;
    }
    for pid in &pids {
        assert!(!common::alive(*pid), "adopted vmm {pid} survived delete");
    }
    assert_eq!(env.vmm_processes(), Vec::<i32>::new());
}

on_ch_sim_and_real_ch! {
    kill9_adoption_on_ch_sim,
    kill9_adoption_on_real_ch => kill9_adoption;
}

/// SIGTERM is graceful: the runtime exits 0 and VMs keep running (like libvirt); the next
/// runtime adopts them.
#[tokio::test]
async fn sigterm_keeps_vms_running() {
    let env = Env::new(Backend::Sim, "halt").unwrap();
    let mut runtime = env.start();
    let mut client = common::Client::new(runtime.channel().await);
    let id = common::create_machine(&mut client, common::spec(vec![])).await;
    common::wait_state(&mut client, &id, MachineState::MachineRunning).await;
    let pid = env.recorded_pid(&id).unwrap();
    drop(client);
    let status = runtime.terminate().await;
    assert!(status.success(), "{status:?}");
    assert!(!env.socket.exists(), "runtime socket left behind");
    assert!(common::alive(pid));

    let runtime = env.start();
    let mut client = common::Client::new(runtime.channel().await);
    common::wait_state(&mut client, &id, MachineState::MachineRunning).await;
    common::delete_and_wait_gone(&mut client, &id).await;
    assert!(!common::alive(pid));
}

/// The runtime socket is 0600.
#[tokio::test]
async fn socket_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = Env::new(Backend::Sim, "halt").unwrap();
    let runtime = env.start();
    let _channel = runtime.channel().await;
    let mode = std::fs::metadata(&env.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

async fn set_power(client: &mut common::Client, id: &str, power: machine::Power) {
    client
        .update_machine_power(machine::UpdateMachinePowerRequest {
            machine_id: id.to_owned(),
            power: power as i32,
        })
        .await
        .unwrap();
}

async fn attach(client: &mut common::Client, id: &str, handle: &str) {
    client
        .attach_volume(machine::AttachVolumeRequest {
            machine_id: id.to_owned(),
            volume: Some(common::file_volume("data", handle)),
        })
        .await
        .unwrap();
}

async fn detach(client: &mut common::Client, id: &str, name: &str) {
    client
        .detach_volume(machine::DetachVolumeRequest {
            machine_id: id.to_owned(),
            name: name.to_owned(),
        })
        .await
        .unwrap();
}

#[derive(Clone, Copy)]
enum Presence {
    /// Neither in the spec nor in the status.
    Gone,
    /// Attached in the status, and the runtime has observed the current generation.
    Attached,
}

async fn wait_volume(
    client: &mut common::Client,
    id: &str,
    name: &str,
    presence: Presence,
) -> machine::Machine {
    let what = match presence {
        Presence::Gone => format!("volume {name} detached"),
        Presence::Attached => format!("volume {name} attached"),
    };
    common::eventually(&what, Duration::from_secs(20), || {
        let mut client = client.clone();
        async move {
            let m = common::get(&mut client, id).await?;
            let ok = match presence {
                Presence::Gone => {
                    common::volume_status(&m, name).is_none()
                        && !m.spec.as_ref()?.volumes.iter().any(|v| v.name == name)
                }
                Presence::Attached => {
                    let generation = m.metadata.as_ref()?.generation;
                    let observed = m.status.as_ref()?.observed_generation;
                    common::volume_status(&m, name).is_some_and(|(_, a)| a)
                        && observed == generation
                }
            };
            ok.then_some(m)
        }
    })
    .await
}

/// CreateMachine starts the VMM while the machine's record is made durable: a runtime killed
/// in between leaves a VMM no stored machine owns. The restarted runtime kills it and removes
/// its directory (and keeps the directories of the machines it knows: `kill9_adoption_*`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_vmms_are_killed_at_start() {
    let env = Env::new(Backend::Sim, "halt").unwrap();
    let dir = env
        .state_dir
        .join("vms")
        .join("0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(&dir).unwrap();
    // A stand-in VMM: its command line names a file in the machine's directory.
    let mut orphan = std::process::Command::new("sh")
        .args(["-c", "sleep 60; true", "sh"])
        .arg(dir.join("api.sock"))
        .spawn()
        .unwrap();
    let runtime = env.start();
    let _client = common::Client::new(runtime.channel().await);
    let status = common::eventually("orphan killed", Duration::from_secs(20), || {
        let status = orphan.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(!status.success(), "{status:?}");
    common::eventually("orphan dir removed", Duration::from_secs(20), || async {
        (!dir.exists()).then_some(())
    })
    .await;
}
