//! The machine runtime on real QEMU (`--vmm qemu`): the PVH stub guest (under KVM where
//! `/dev/kvm` opens) through the whole lifecycle, guest power-off and kill -9 adoption, and a
//! real Linux guest (Debian's cloud kernel + a busybox initramfs built here, under TCG) that
//! proves a volume attached through the IRI is visible inside the guest.
//!
//! QEMU comes from `IRIKIT_QEMU_BIN` or `qemu-system-x86_64` on `PATH`; the Linux guest's parts
//! from `IRIKIT_GUEST_DIR` (see `ci/install.sh`). Missing pieces print one `skip:` line unless
//! `IRIKIT_REQUIRE` names `qemu`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "guest/guests.rs"]
mod guests;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{VolumeIs, qemu_env, set_power};
use iri_spec::machine::v1alpha1::{self as machine, MachineState};

async fn create(client: &mut common::Client, volumes: Vec<machine::Volume>) -> String {
    common::create(client, common::spec(volumes)).await
}

async fn wait_attached(client: &common::Client, id: &str, name: &str) -> machine::Machine {
    common::wait_volume(client, id, name, VolumeIs::Attached, VOLUME_TIMEOUT).await
}

const VOLUME_TIMEOUT: Duration = Duration::from_secs(30);

/// Create with a file volume and a local disk, RUNNING, power off/on, hot-unplug and re-plug
/// the file volume, delete: no QEMU left.
#[tokio::test]
async fn stub_lifecycle_on_qemu() {
    let Some((env, _reaper)) = qemu_env("halt") else {
        return;
    };
    let (_volumes, _vclient, handle) = common::file_volume_runtime(&env, 64 << 20).await;
    let (_runtime, mut client) = env.start_client(&[]).await;

    let id = create(
        &mut client,
        vec![
            common::file_volume("data", &handle),
            common::local_disk("scratch", 16 << 20),
        ],
    )
    .await;
    common::wait_state(&mut client, &id, MachineState::MachineRunning).await;
    env.wait_serial(&id, "PVH-HELLO cmdline=halt", 1, Duration::from_secs(20))
        .await;
    let m = wait_attached(&client, &id, "data").await;
    assert_eq!(common::volume_status(&m, "data").unwrap().0, handle);
    assert!(common::volume_status(&m, "scratch").unwrap().1);
    let first_pid = env.recorded_pid(&id).expect("qemu pid recorded");
    assert!(common::alive(first_pid));

    // Power off (hard: the QEMU process ends), then on (a fresh QEMU boots the guest again).
    set_power(&mut client, &id, machine::Power::Off).await;
    common::wait_state(&mut client, &id, MachineState::MachineTerminated).await;
    common::eventually(
        "qemu gone after power off",
        Duration::from_secs(15),
        || async { (!common::alive(first_pid)).then_some(()) },
    )
    .await;
    set_power(&mut client, &id, machine::Power::On).await;
    common::wait_state(&mut client, &id, MachineState::MachineRunning).await;
    env.wait_serial(&id, "PVH-HELLO", 2, Duration::from_secs(20))
        .await;
    wait_attached(&client, &id, "data").await;

    // Hot-unplug and re-plug the volume runtime's volume on the running VM.
    common::detach_volume(&mut client, &id, "data").await;
    common::wait_volume(&client, &id, "data", VolumeIs::Gone, VOLUME_TIMEOUT).await;
    common::attach_volume(&mut client, &id, common::file_volume("data", &handle)).await;
    let m = wait_attached(&client, &id, "data").await;
    assert_eq!(common::state_of(&m), MachineState::MachineRunning);
    assert!(common::volume_status(&m, "scratch").unwrap().1);

    env.delete_and_check(&mut client, &id).await;
    assert!(
        Path::new(&handle).exists(),
        "the volume runtime's file must survive"
    );
}

/// The stub powering itself off ends QEMU: TERMINATED, not an error; power on runs it again.
#[tokio::test]
async fn stub_guest_power_off_on_qemu() {
    let Some((env, _reaper)) = qemu_env("poweroff") else {
        return;
    };
    // Guest-initiated power-off under TCG: on these PVM hosts the stub's ACPI write under KVM
    // did not always reach QEMU in time when the machine was loaded (see the closing note).
    let (_runtime, mut client) = env.start_client(&["--qemu-accel", "tcg"]).await;
    let id = create(&mut client, vec![]).await;
    let boot = Duration::from_secs(20);
    env.wait_serial(&id, "PVH-HELLO cmdline=poweroff", 1, boot)
        .await;
    common::wait_state(&mut client, &id, MachineState::MachineTerminated).await;
    env.wait_no_vmm("qemu exited", Duration::from_secs(15))
        .await;
    set_power(&mut client, &id, machine::Power::On).await;
    env.wait_serial(&id, "PVH-HELLO", 2, boot).await;
    common::wait_state(&mut client, &id, MachineState::MachineTerminated).await;
    env.delete_and_check(&mut client, &id).await;
}

/// kill -9 the runtime with 3 machines (one powered off); the restarted runtime lists them with
/// the same state, adopts the QEMU processes, still drives them, and deletes them.
#[tokio::test]
async fn kill9_adoption_on_qemu() {
    let Some((env, _reaper)) = qemu_env("halt") else {
        return;
    };
    let (mut runtime, mut client) = env.start_client(&[]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(create(&mut client, vec![common::local_disk("root", 8 << 20)]).await);
    }
    for id in &ids {
        common::wait_state(&mut client, id, MachineState::MachineRunning).await;
        wait_attached(&client, id, "root").await;
    }
    set_power(&mut client, &ids[2], machine::Power::Off).await;
    common::wait_state(&mut client, &ids[2], MachineState::MachineTerminated).await;
    let pids: Vec<i32> = ids[..2]
        .iter()
        .map(|id| env.recorded_pid(id).unwrap())
        .collect();

    let (_runtime, mut client, after) = env.kill9_and_adopt(&mut runtime, client, &pids).await;
    assert_eq!(after.len(), 3);
    for (id, pid) in ids.iter().zip(&pids) {
        assert_eq!(env.recorded_pid(id), Some(*pid), "qemu was not adopted");
        common::wait_state(&mut client, id, MachineState::MachineRunning).await;
    }
    // The adopted QEMUs still obey: hot-plug a disk into one, power the stopped one on.
    common::attach_volume(&mut client, &ids[0], common::local_disk("extra", 4 << 20)).await;
    wait_attached(&client, &ids[0], "extra").await;
    set_power(&mut client, &ids[2], machine::Power::On).await;
    common::wait_state(&mut client, &ids[2], MachineState::MachineRunning).await;

    for id in &ids {
        env.delete_and_check(&mut client, id).await;
    }
    for pid in &pids {
        assert!(!common::alive(*pid), "adopted qemu {pid} survived delete");
    }
}

// ---- the Linux guest ------------------------------------------------------------------------

/// The Linux guest: (kernel, initramfs built into `dir`), or a skip line.
fn linux_guest(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let Some(guest) = std::env::var_os("IRIKIT_GUEST_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
    else {
        common::skip(
            "qemu",
            "IRIKIT_GUEST_DIR is not set (ci/install.sh fetches the Debian guest parts)",
        );
        return None;
    };
    let kernel = guest.join("vmlinuz");
    let busybox = guest.join("busybox");
    let modules = guest.join("modules");
    if !kernel.is_file() || !busybox.is_file() || !modules.is_dir() {
        common::skip(
            "qemu",
            &format!("{} lacks vmlinuz, busybox or modules/", guest.display()),
        );
        return None;
    }
    let initramfs = dir.join("initramfs.cpio.gz");
    guests::build_initramfs(&guest, &initramfs).unwrap();
    Some((kernel, initramfs))
}

/// Debian's kernel + busybox under TCG, booted through CreateMachine with a file volume from
/// the volume runtime: the serial log shows the init marker and the volume's first bytes.
/// Then power off (ACPI power button, the guest powers off, QEMU exits), power on, delete.
#[tokio::test]
async fn linux_guest_sees_its_volume_on_qemu() {
    let Some((env, _reaper)) = qemu_env("unused") else {
        return;
    };
    let Some((kernel, initramfs)) = linux_guest(env.dir.path()) else {
        return;
    };
    let (_volumes, _vclient, handle) = common::file_volume_runtime(&env, 64 << 20).await;
    let magic = b"IRIKIT-DISK-MAGIC-012345";
    common::write_at_start(&handle, magic);
    let mut args = env.runtime_args(&[
        "--qemu-accel",
        "tcg",
        "--initramfs",
        &initramfs.display().to_string(),
        "--graceful-power-off",
        "60s",
    ]);
    // Swap the stub guest for the Linux kernel, with a Linux command line.
    for pair in args.chunks_exact_mut(2) {
        match pair[0].as_str() {
            "--kernel" => pair[1] = kernel.display().to_string(),
            "--cmdline" => pair[1] = "console=ttyS0 quiet panic=-1".into(),
            "--machine-class" if pair[1].starts_with(common::CLASS) => {
                pair[1] = format!("{},1,268435456", common::CLASS);
            }
            _ => {}
        }
    }
    let runtime = env.spawn_runtime(&args);
    let mut client = common::Client::new(runtime.channel().await);
    let id = create(&mut client, vec![common::file_volume("data", &handle)]).await;
    let boot = Duration::from_secs(120);
    env.wait_serial(&id, "IRIKIT-GUEST-READY", 1, boot).await;
    let log = env.serial_log(&id);
    assert!(log.contains("IRIKIT-GUEST-INIT"), "{log}");
    let disk_line = format!("IRIKIT-DISK0: {}", std::str::from_utf8(magic).unwrap());
    assert!(
        log.contains(&disk_line),
        "no {disk_line:?} in serial log:\n{log}"
    );
    let m = common::wait_state(&mut client, &id, MachineState::MachineRunning).await;
    assert_eq!(
        common::volume_status(&m, "data").unwrap(),
        (handle.clone(), true)
    );
    let pid = env.recorded_pid(&id).unwrap();

    // Hot-unplug with the guest's cooperation (Linux pciehp), then hot-plug again.
    common::detach_volume(&mut client, &id, "data").await;
    common::wait_volume(&client, &id, "data", VolumeIs::Gone, boot).await;
    common::attach_volume(&mut client, &id, common::file_volume("data", &handle)).await;
    wait_attached(&client, &id, "data").await;

    // Power off: the ACPI power button reaches the guest's acpid, which powers off.
    set_power(&mut client, &id, machine::Power::Off).await;
    env.wait_serial(&id, "IRIKIT-POWER-BUTTON", 1, Duration::from_secs(30))
        .await;
    common::wait_state(&mut client, &id, MachineState::MachineTerminated).await;
    assert!(!common::alive(pid), "qemu still runs after power off");

    set_power(&mut client, &id, machine::Power::On).await;
    env.wait_serial(&id, "IRIKIT-GUEST-READY", 2, boot).await;
    env.wait_serial(&id, &disk_line, 2, boot).await;
    common::wait_state(&mut client, &id, MachineState::MachineRunning).await;

    env.delete_and_check(&mut client, &id).await;
}

/// `--vmm cloud-hypervisor` (the default) still needs `--ch-binary`: one line, non-zero exit.
#[test]
fn cloud_hypervisor_needs_its_binary() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("k");
    std::fs::write(&kernel, b"k").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ch-machine-runtime"))
        .args(["--socket", &dir.path().join("s").display().to_string()])
        .args(["--state-dir", &dir.path().join("st").display().to_string()])
        .args(["--kernel", &kernel.display().to_string()])
        .args(["--machine-class", "small,1,134217728"])
        .env_remove("IRIKIT_CH_BIN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--ch-binary"), "{stderr}");
}
