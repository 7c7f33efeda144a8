//! Hostile guests and hostile clients (issue 17): a guest that writes a qcow2 header into its
//! raw disk must not get it re-attached as qcow2 (which would let the header name any host file
//! as a backing file), on ch-sim and on real QEMU; and requests no VMM can run (impossible disk
//! sizes, more devices than the VMM has slots) are refused with OutOfRange / ResourceExhausted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{Backend, Env, VolumeIs, write_at_start};
use iri_spec::machine::v1alpha1::{self as machine, MachineState};
use serde_json::{Value, json};
use tonic::Code;

/// A volume connection as the machinepoollet sends it: the volume runtime's access attributes
/// (here `format=raw`) are passed through.
fn raw_file_volume(name: &str, handle: &str) -> machine::Volume {
    let mut v = common::file_volume(name, handle);
    if let Some(c) = v.connection.as_mut() {
        c.attributes = HashMap::from([("format".to_owned(), "raw".to_owned())]);
    }
    v
}

/// The first bytes of a real qcow2 image whose backing file is `secret` (made by `qemu-img`
/// when it runs; else just the magic, which is all a sniffer looks at).
fn hostile_header(dir: &Path, secret: &Path) -> Vec<u8> {
    let out = dir.join("hostile.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(secret)
        .arg(&out)
        .arg("64M")
        .status()
        .is_ok_and(|s| s.success());
    if made {
        std::fs::read(&out).unwrap()
    } else {
        b"QFI\xfb\0\0\0\x03".to_vec()
    }
}

/// The formats recorded for the machine's disks in its state file.
fn recorded_formats(env: &Env, id: &str) -> Vec<String> {
    let v: Value = env.stored_record(id).unwrap();
    v["disks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d["disk"]["format"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn wait_attached(client: &common::Client, id: &str, name: &str) {
    common::wait_volume(
        client,
        id,
        name,
        VolumeIs::Attached,
        Duration::from_secs(30),
    )
    .await;
}

/// Three reconciles at the test's 200 ms resync interval, plus slack.
const THREE_RECONCILES: Duration = Duration::from_millis(1500);

/// A guest writes a qcow2 header (backing file = a host secret) over its raw volume on ch-sim:
/// after three reconciles the disk is still attached, as `Raw`, with backing files off.
#[tokio::test]
async fn guest_written_qcow2_header_stays_raw_on_ch_sim() {
    let env = Env::new(Backend::Sim, "halt").unwrap();
    let (_volumes, _vclient, handle) = common::file_volume_runtime(&env, 8 << 20).await;
    let (runtime, mut client) = env.start_client(&[]).await;
    let id = common::create_running(&mut client, vec![raw_file_volume("data", &handle)]).await;
    wait_attached(&client, &id, "data").await;
    let before = env.vm_info(&id).await;
    assert_eq!(before["config"]["disks"][0]["image_type"], "Raw");

    // The guest owns every byte of its raw disk.
    let secret = env.dir.path().join("secret");
    std::fs::write(&secret, b"HOST-SECRET").unwrap();
    let header = hostile_header(env.dir.path(), &secret);
    write_at_start(&handle, &header);
    tokio::time::sleep(THREE_RECONCILES).await;

    let after = env.vm_info(&id).await;
    let disks = after["config"]["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 1, "disk re-plugged: {after}");
    assert_eq!(disks[0]["id"], before["config"]["disks"][0]["id"]);
    assert_eq!(disks[0]["image_type"], "Raw", "{after}");
    assert_ne!(disks[0]["backing_files"], json!(true), "{after}");
    assert_eq!(recorded_formats(&env, &id), ["Raw"]);
    let m = common::get(&mut client, &id).await.unwrap();
    assert!(common::volume_status(&m, "data").unwrap().1);
    drop(runtime);
    drop(common::Reaper::for_env(&env));
}

/// A minimal QMP client (the runtime's own is private): greeting, capabilities, one command.
fn qmp(socket: &Path, command: &str) -> Value {
    let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let read_reply = |reader: &mut BufReader<std::os::unix::net::UnixStream>| loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        if v.get("return").is_some() || v.get("error").is_some() {
            return v;
        }
    };
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    writer
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .unwrap();
    read_reply(&mut reader);
    writer
        .write_all(format!("{{\"execute\":\"{command}\"}}\n").as_bytes())
        .unwrap();
    read_reply(&mut reader)["return"].clone()
}

/// Paths the process holds open.
fn open_files(pid: i32) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .collect()
}

/// The same on real QEMU: the qcow2 header names a host file as its backing file; QEMU never
/// opens it (checked in `/proc/<qemu>/fd`) and its block node for the volume stays `raw`.
#[tokio::test]
async fn guest_written_qcow2_header_stays_raw_on_qemu() {
    let Some((env, _reaper)) = common::qemu_env("halt") else {
        return;
    };
    let (_volumes, _vclient, handle) = common::file_volume_runtime(&env, 8 << 20).await;
    let (runtime, mut client) = env.start_client(&[]).await;
    let id = common::create_running(&mut client, vec![raw_file_volume("data", &handle)]).await;
    wait_attached(&client, &id, "data").await;
    let pid = env.recorded_pid(&id).unwrap();
    let secret = std::fs::canonicalize(env.dir.path())
        .unwrap()
        .join("secret");
    std::fs::write(&secret, b"HOST-SECRET").unwrap();
    let header = hostile_header(env.dir.path(), &secret);
    assert!(header.len() > 8, "qemu-img must run for the QEMU case");
    write_at_start(&handle, &header);
    tokio::time::sleep(THREE_RECONCILES).await;

    assert_eq!(env.recorded_pid(&id), Some(pid), "qemu restarted");
    let files = open_files(pid);
    assert!(
        !files.contains(&secret),
        "qemu opened the host file: {files:?}"
    );
    let api = env.api_socket(&id);
    let nodes = tokio::task::spawn_blocking(move || qmp(&api, "query-named-block-nodes"))
        .await
        .unwrap();
    let handle_path = std::fs::canonicalize(&handle).unwrap();
    let format_nodes: Vec<&Value> = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["drv"] != "file")
        .collect();
    assert_eq!(format_nodes.len(), 1, "{nodes}");
    assert_eq!(format_nodes[0]["drv"], "raw", "{nodes}");
    assert_eq!(
        format_nodes[0]["file"].as_str().map(PathBuf::from),
        Some(handle_path),
        "{nodes}"
    );
    assert!(
        format_nodes[0].get("backing_file").is_none(),
        "backing file set: {nodes}"
    );
    assert_eq!(recorded_formats(&env, &id), ["Raw"]);
    drop(runtime);
}

// ---- limits ----------------------------------------------------------------------------------

async fn code_of<T>(r: Result<T, tonic::Status>) -> Code {
    r.err().map_or(Code::Ok, |s| s.code())
}

/// A local disk no filesystem can hold, and more devices than a VMM has slots: refused before
/// anything is created, also through AttachVolume and AttachNetworkInterface.
#[tokio::test]
async fn impossible_sizes_and_too_many_devices_are_refused() {
    let env = Env::new(Backend::Sim, "halt").unwrap();
    let (runtime, mut client) = env.start_client(&[]).await;

    let huge = common::local_disk("huge", i64::MAX);
    let code = code_of(
        client
            .create_machine(common::machine_request(common::spec(vec![huge.clone()])))
            .await,
    )
    .await;
    assert!(
        matches!(code, Code::OutOfRange | Code::InvalidArgument),
        "{code:?}"
    );

    let many: Vec<machine::Volume> = (0..10_000)
        .map(|i| common::local_disk(&format!("d{i}"), 1 << 20))
        .collect();
    let code = code_of(
        client
            .create_machine(common::machine_request(common::spec(many)))
            .await,
    )
    .await;
    assert_eq!(code, Code::ResourceExhausted);
    // Only the spare files made ahead for first writes may be there.
    let left: Vec<String> = std::fs::read_dir(env.state_dir.join("machines"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with(".spare-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "a refused machine left state behind: {left:?}"
    );

    // Attach one device after another until the VMM's slots are used up.
    let id = common::create_running(&mut client, vec![]).await;
    let code = code_of(
        client
            .attach_volume(machine::AttachVolumeRequest {
                machine_id: id.clone(),
                volume: Some(huge),
            })
            .await,
    )
    .await;
    assert!(
        matches!(code, Code::OutOfRange | Code::InvalidArgument),
        "{code:?}"
    );
    let mut attached = 0;
    let last = loop {
        let r = if attached % 2 == 0 {
            client
                .attach_volume(machine::AttachVolumeRequest {
                    machine_id: id.clone(),
                    volume: Some(common::local_disk(&format!("v{attached}"), 1 << 20)),
                })
                .await
                .map(drop)
        } else {
            client
                .attach_network_interface(machine::AttachNetworkInterfaceRequest {
                    machine_id: id.clone(),
                    network_interface: Some(machine::NetworkInterface {
                        name: format!("n{attached}"),
                        ..Default::default()
                    }),
                })
                .await
                .map(drop)
        };
        match r {
            Ok(()) => attached += 1,
            Err(status) => break status,
        }
        assert!(attached <= 64, "no device limit");
    };
    assert_eq!(last.code(), Code::ResourceExhausted, "{last:?}");
    assert!(attached >= 8, "only {attached} devices fit");
    // Both kinds are refused once full.
    let nic = client
        .attach_network_interface(machine::AttachNetworkInterfaceRequest {
            machine_id: id.clone(),
            network_interface: Some(machine::NetworkInterface {
                name: "one-more".into(),
                ..Default::default()
            }),
        })
        .await;
    assert_eq!(code_of(nic).await, Code::ResourceExhausted);
    drop(runtime);
    drop(common::Reaper::for_env(&env));
}

// ---- files on the host -----------------------------------------------------------------------

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Local disks and serial logs are 0600 in 0700 directories (they hold tenant data).
#[tokio::test]
async fn local_disks_and_serial_logs_are_private() {
    let env = Env::new(Backend::Sim, "halt").unwrap();
    let (runtime, mut client) = env.start_client(&[]).await;
    let id =
        common::create_running(&mut client, vec![common::local_disk("scratch", 1 << 20)]).await;
    wait_attached(&client, &id, "scratch").await;
    let vms = env.state_dir.join("vms");
    let dir = env.vm_dir(&id);
    for d in [&vms, &dir, &dir.join("disks")] {
        assert_eq!(mode(d), 0o700, "{}", d.display());
    }
    for f in [dir.join("disks/scratch.img"), dir.join("serial.log")] {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    // Power cycle: the history file CH's truncation leaves behind is private too.
    for power in [machine::Power::Off, machine::Power::On] {
        common::set_power(&mut client, &id, power).await;
    }
    common::eventually("serial history", Duration::from_secs(20), || async {
        dir.join("serial.log.old").exists().then_some(())
    })
    .await;
    assert_eq!(mode(&dir.join("serial.log.old")), 0o600);
    drop(runtime);
    drop(common::Reaper::for_env(&env));
}

/// Ignition data never appears on QEMU's command line (any local user reads `/proc/*/cmdline`):
/// it goes through a 0600 file, so 200 KiB of it boots too (a command-line argument is limited
/// to 128 KiB).
#[tokio::test]
async fn ignition_is_not_on_the_qemu_command_line() {
    let Some((env, _reaper)) = common::qemu_env("halt") else {
        return;
    };
    let (runtime, mut client) = env.start_client(&[]).await;
    let mut ignition = b"{\"ignition\":{\"version\":\"3.4.0\"},\"secret\":\"IGN-SECRET-".to_vec();
    ignition.extend(std::iter::repeat_n(b'x', 200 << 10));
    ignition.extend(b"\"}");
    let mut spec = common::spec(vec![]);
    spec.ignition_data = ignition;
    let id = common::create(&mut client, spec).await;
    common::wait_state(&mut client, &id, MachineState::MachineRunning).await;
    let pid = env.recorded_pid(&id).unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    // base64 of `{"ignition":{"version"` — the start of the OEM string.
    let b64_start = b"eyJpZ25pdGlvbiI6eyJ2ZXJzaW9uIj";
    assert!(
        !contains(&cmdline, b64_start),
        "ignition on the command line"
    );
    assert!(
        cmdline.len() < 16 << 10,
        "{} bytes of cmdline",
        cmdline.len()
    );
    let dir = env.vm_dir(&id);
    let oem: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.starts_with(b64_start)))
        .collect();
    assert_eq!(oem.len(), 1, "one OEM string file in {}", dir.display());
    assert_eq!(mode(&oem[0]), 0o600);
    assert_eq!(mode(&dir), 0o700);
    drop(runtime);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A machine that cannot boot (its kernel is gone) is retried at every reconcile, but the
/// same failure is one event, not one per reconcile (200 ms here, forever).
#[tokio::test]
async fn a_failing_machine_does_not_flood_events() {
    let env = Env::new(Backend::Sim, "halt").unwrap();
    let (runtime, mut client) = env.start_client(&[]).await;
    std::fs::remove_file(&env.kernel).unwrap();
    let id = common::create(&mut client, common::spec(vec![])).await;
    let boot_failures = |client: common::Client| {
        let id = id.clone();
        async move {
            let mut client = client;
            common::event_reasons(&mut client, &id)
                .await
                .iter()
                .filter(|reason| *reason == "BootFailed")
                .count()
        }
    };
    common::eventually("a BootFailed event", Duration::from_secs(20), || {
        let f = boot_failures(client.clone());
        async move { (f.await > 0).then_some(()) }
    })
    .await;
    // Ten more reconciles.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(boot_failures(client.clone()).await, 1);
    let m = common::get(&mut client, &id).await.unwrap();
    assert_eq!(common::state_of(&m), MachineState::MachinePending);
    drop(runtime);
    drop(common::Reaper::for_env(&env));
}
