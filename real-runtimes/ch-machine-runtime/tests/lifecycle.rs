//! End-to-end lifecycle of the CH machine runtime binary, on ch-sim (always) and on a real
//! cloud-hypervisor (when `IRIKIT_CH_BIN` names one and /dev/kvm opens).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Backend, Env, VolumeIs, on_ch_sim_and_real_ch};
use iri_spec::machine::v1alpha1::{self as machine, MachineState};

const VOLUME_TIMEOUT: Duration = Duration::from_secs(20);

/// Volume from the volume runtime + a local disk: RUNNING, power off/on, detach/re-attach,
/// delete, and no VMM process left.
async fn lifecycle(backend: Backend) {
    let Some(env) = Env::new(backend, "halt") else {
        return;
    };
    let (_volumes, _vclient, handle) = common::file_volume_runtime(&env, 64 << 20).await;
    let (_runtime, mut client) = env.start_client(&[]).await;

    let created = common::create_request(
        &mut client,
        common::machine_request(common::spec(vec![
            common::file_volume("data", &handle),
            common::local_disk("scratch", 16 << 20),
        ])),
    )
    .await;
    let id = common::id_of(&created);
    assert_eq!(common::state_of(&created), MachineState::MachinePending);

    let running = common::wait_state(&mut client, &id, MachineState::MachineRunning).await;
    let m = common::wait_machine(&client, &id, "volumes attached", VOLUME_TIMEOUT, |m| {
        let ok = common::volume_status(m, "data").is_some_and(|(_, a)| a)
            && common::volume_status(m, "scratch").is_some_and(|(_, a)| a);
        ok.then(|| m.clone())
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
    env.wait_serial(&id, "PVH-HELLO cmdline=halt", 1, Duration::from_secs(10))
        .await;
    let first_pid = env.recorded_pid(&id).expect("vmm pid recorded");
    assert!(common::alive(first_pid));

    // Power off; detach the volume while the VM is off (no guest involved); power on.
    common::set_power(&mut client, &id, machine::Power::Off).await;
    let off = common::wait_state(&mut client, &id, MachineState::MachineTerminated).await;
    assert_eq!(off.spec.as_ref().unwrap().power, machine::Power::Off as i32);
    common::detach_volume(&mut client, &id, "data").await;
    wait_volume(&client, &id, VolumeIs::Gone).await;
    common::set_power(&mut client, &id, machine::Power::On).await;
    common::wait_state(&mut client, &id, MachineState::MachineRunning).await;

    // Re-attach while running (hot-plug), then hot-unplug.
    common::attach_volume(&mut client, &id, common::file_volume("data", &handle)).await;
    let m = wait_volume(&client, &id, VolumeIs::Attached).await;
    assert_eq!(common::state_of(&m), MachineState::MachineRunning);
    assert!(m.metadata.as_ref().unwrap().generation >= 4);
    common::detach_volume(&mut client, &id, "data").await;
    wait_volume(&client, &id, VolumeIs::Gone).await;

    // The stub guest never acknowledges the ACPI eject, so Cloud Hypervisor (and ch-sim) keep
    // the unplugged disk's image locked until the VM shuts down: a re-attach now fails in the
    // VMM, and the runtime reports the volume as not attached (with a HotplugFailed event)
    // instead of pretending. A power cycle releases the lock and the volume attaches.
    common::attach_volume(&mut client, &id, common::file_volume("data", &handle)).await;
    common::eventually("HotplugFailed event", VOLUME_TIMEOUT, || {
        let mut client = client.clone();
        let id = id.clone();
        async move {
            let reasons = common::event_reasons(&mut client, &id).await;
            reasons.iter().any(|r| r == "HotplugFailed").then_some(())
        }
    })
    .await;
    let m = common::get(&mut client, &id).await.unwrap();
    assert_eq!(
        common::volume_status(&m, "data"),
        Some((handle.clone(), false)),
        "a volume the VMM could not hot-plug is reported Pending"
    );
    common::set_power(&mut client, &id, machine::Power::Off).await;
    common::wait_state(&mut client, &id, MachineState::MachineTerminated).await;
    common::set_power(&mut client, &id, machine::Power::On).await;
    common::wait_state(&mut client, &id, MachineState::MachineRunning).await;
    wait_volume(&client, &id, VolumeIs::Attached).await;

    // Delete: TERMINATING while tearing down, repeated delete OK, then gone.
    let pid = env.recorded_pid(&id).expect("vmm pid recorded");
    common::delete(&mut client, &id).await;
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
    assert!(!env.vm_dir(&id).exists(), "machine dir left");
    assert!(
        std::path::Path::new(&handle).exists(),
        "the volume runtime's file must survive machine delete"
    );

    // Events for create, boot, power and delete.
    let reasons = common::event_reasons(&mut client, &id).await;
    for want in ["Created", "Booted", "PowerOff", "PowerOn", "Deleted"] {
        assert!(
            reasons.iter().any(|r| r == want),
            "no {want} event in {reasons:?}"
        );
    }
}

on_ch_sim_and_real_ch!(lifecycle: lifecycle_on_ch_sim, lifecycle_on_real_ch);

/// A guest that powers itself off (the VMM exits 0) is TERMINATED, not an error; power on
/// starts it again.
async fn guest_power_off(backend: Backend) {
    let Some(env) = Env::new(backend, "poweroff") else {
        return;
    };
    let (_runtime, mut client) = env.start_client(&[]).await;
    let id = common::create(&mut client, common::spec(vec![])).await;
    let boot = Duration::from_secs(20);
    env.wait_serial(&id, "PVH-HELLO cmdline=poweroff", 1, boot)
        .await;
    common::wait_state(&mut client, &id, MachineState::MachineTerminated).await;
    env.wait_no_vmm("vmm exited", Duration::from_secs(10)).await;
    common::set_power(&mut client, &id, machine::Power::On).await;
    env.wait_serial(&id, "PVH-HELLO", 2, boot).await;
    common::wait_state(&mut client, &id, MachineState::MachineTerminated).await;
    common::delete_and_wait(&mut client, &id).await;
    assert_eq!(env.vmm_processes(), Vec::<i32>::new());
}

on_ch_sim_and_real_ch!(guest_power_off: guest_power_off_on_ch_sim, guest_power_off_on_real_ch);

/// kill -9 the runtime with 3 machines running; a restarted runtime lists them with their
/// state and stops their VMMs on delete.
async fn kill9_adoption(backend: Backend) {
    let Some(env) = Env::new(backend, "halt") else {
        return;
    };
    let (mut runtime, mut client) = env.start_client(&[]).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let mut request =
            common::machine_request(common::spec(vec![common::local_disk("root", 8 << 20)]));
        common::labels_mut(&mut request).insert("n".into(), n.to_string());
        ids.push(common::id_of(
            &common::create_request(&mut client, request).await,
        ));
    }
    for id in &ids {
        common::wait_state(&mut client, id, MachineState::MachineRunning).await;
    }
    // Power one off so that "correct state" covers more than RUNNING.
    common::set_power(&mut client, &ids[2], machine::Power::Off).await;
    common::wait_state(&mut client, &ids[2], MachineState::MachineTerminated).await;
    let pids: Vec<i32> = ids.iter().map(|id| env.recorded_pid(id).unwrap()).collect();

    let (_runtime, mut client, after) = env.kill9_and_adopt(&mut runtime, client, &pids).await;
    assert_eq!(after.len(), 3);
    assert_eq!(common::state_of(&after[0]), MachineState::MachineRunning);
    assert_eq!(common::state_of(&after[2]), MachineState::MachineTerminated);
    for (id, pid) in ids.iter().zip(&pids) {
        assert_eq!(env.recorded_pid(id), Some(*pid), "vmm was not adopted");
    }
    // The adopted VMMs still obey: power the stopped one on again.
    common::set_power(&mut client, &ids[2], machine::Power::On).await;
    common::wait_state(&mut client, &ids[2], MachineState::MachineRunning).await;

    for id in &ids {
        common::delete(&mut client, id).await;
    }
    for id in &ids {
        common::wait_gone(&mut client, id).await;
    }
    for pid in &pids {
        assert!(!common::alive(*pid), "adopted vmm {pid} survived delete");
    }
    assert_eq!(env.vmm_processes(), Vec::<i32>::new());
}

on_ch_sim_and_real_ch!(kill9_adoption: kill9_adoption_on_ch_sim, kill9_adoption_on_real_ch);

/// SIGTERM is graceful: the runtime exits 0 and VMs keep running (like libvirt); the next
/// runtime adopts them.
#[tokio::test]
async fn sigterm_keeps_vms_running() {
    let env = Env::new(Backend::Sim, "halt").unwrap();
    let (mut runtime, mut client) = env.start_client(&[]).await;
    let id = common::create_running(&mut client, vec![]).await;
    let pid = env.recorded_pid(&id).unwrap();
    drop(client);
    let status = runtime.terminate().await;
    assert!(status.success(), "{status:?}");
    assert!(!env.socket.exists(), "runtime socket left behind");
    assert!(common::alive(pid));

    let (_runtime, mut client) = env.start_client(&[]).await;
    common::wait_state(&mut client, &id, MachineState::MachineRunning).await;
    common::delete_and_wait(&mut client, &id).await;
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

/// Wait until the `data` volume of machine `id` is `want`.
async fn wait_volume(client: &common::Client, id: &str, want: VolumeIs) -> machine::Machine {
    common::wait_volume(client, id, "data", want, VOLUME_TIMEOUT).await
}

/// CreateMachine starts the VMM while the machine's record is made durable: a runtime killed
/// in between leaves a VMM no stored machine owns. The restarted runtime kills it and removes
/// its directory (and keeps the directories of the machines it knows: `kill9_adoption_*`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_vmms_are_killed_at_start() {
    let env = Env::new(Backend::Sim, "halt").unwrap();
    let dir = env.vm_dir("0123456789abcdef0123456789abcdef");
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
