//! The IRI contract (reference §2, §7.4) of the CH runtime, in process on ch-sim: the
//! error-code matrix, metadata round trips, generations, Status, Version, Exec, events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{sync::Arc, time::Duration};

use ch_machine_runtime::{
    config::{Config, MachineClass, NicMode, Payload},
    vmm::CloudHypervisor,
};
use common::{Backend, Client, Env};
use iri_spec::machine::v1alpha1::{self as machine, MachineState};
use rstest::rstest;
use tokio_util::sync::CancellationToken;
use tonic::Code;

struct InProcess {
    env: Env,
    client: Client,
    token: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    /// With `--nic-mode tap`: ch-sim creates no host devices, so this needs no root.
    async fn start() -> Self {
        Self::start_with(NicMode::Tap).await
    }

    async fn start_with(nic_mode: NicMode) -> Self {
        let env = Env::new(Backend::Sim, "halt").unwrap();
        let cfg = Config {
            state_dir: env.state_dir.clone(),
            vmm_binary: Backend::Sim.binary(),
            payload: Payload {
                kernel: env.kernel.clone(),
                cmdline: "halt".into(),
            },
            classes: vec![
                MachineClass {
                    name: common::CLASS.into(),
                    cpu: 1,
                    memory_bytes: 128 << 20,
                },
                MachineClass {
                    name: "large".into(),
                    cpu: 2,
                    memory_bytes: 256 << 20,
                },
            ],
            volume_dirs: vec![std::fs::canonicalize(&env.volume_dir).unwrap()],
            image_dirs: vec![std::fs::canonicalize(&env.image_dir).unwrap()],
            default_local_disk_bytes: 1 << 20,
            nic_mode,
            tap_prefix: "ct".into(),
            resync_interval: Duration::from_millis(200),
            graceful_power_off: Duration::ZERO,
            stop_vms_on_exit: true,
            cpu_overcommit: 1,
            warm_vmms: 0,
            console_listen: "127.0.0.1:0".parse().unwrap(),
        }
        .validate()
        .unwrap();
        let token = CancellationToken::new();
        let vmm = Arc::new(CloudHypervisor::new(cfg.vmm_binary.clone()));
        let socket = env.socket.clone();
        let task = tokio::spawn(ch_machine_runtime::serve(cfg, vmm, socket, token.clone()));
        common::wait_for_path(&env.socket, Duration::from_secs(10)).await;
        let channel = iri_spec::endpoint::connect(&iri_spec::endpoint::Endpoint::unix(&env.socket))
            .await
            .unwrap();
        Self {
            env,
            client: Client::new(channel),
            token,
            task,
        }
    }

    async fn stop(self) {
        self.token.cancel();
        drop(self.client);
        self.task.await.unwrap().unwrap();
        assert_eq!(
            self.env.vmm_processes(),
            Vec::<i32>::new(),
            "--stop-vms-on-exit left vmms"
        );
    }

    async fn create(&mut self, spec: machine::MachineSpec) -> machine::Machine {
        common::create_request(&mut self.client, common::machine_request(spec)).await
    }
}

/// One call of the matrix; `machine` is replaced by a live machine's id.
#[derive(Debug, Clone, Copy)]
enum Call {
    DeleteUnknown,
    DeleteEmptyId,
    PowerUnknown,
    PowerInvalid,
    AnnotationsUnknown,
    AttachVolumeUnknownMachine,
    AttachVolumeMissing,
    AttachVolumeDuplicate,
    AttachVolumeOutsideDirs,
    AttachVolumeDotDot,
    AttachVolumeSlashName,
    AttachVolumeNulName,
    AttachVolumeBadDriver,
    AttachVolumeBothSources,
    DetachVolumeUnknownName,
    DetachVolumeUnknownMachine,
    UpdateVolumeUnknownName,
    AttachNicDuplicate,
    DetachNicUnknownName,
    ExecUnknown,
    CreateNoMachine,
    CreateNoSpec,
    CreateUnknownClass,
    CreateEmptyClass,
    CreateImageOutsideDirs,
}

fn file_volume(name: &str, handle: &str) -> machine::Volume {
    common::file_volume(name, handle)
}

/// The AttachVolume request of an `AttachVolume*` call on the live machine `id`, with `inside`
/// a file in the volume dir and `outside` one outside it; `None` for the other calls.
fn attach_request(
    call: Call,
    id: &str,
    inside: &str,
    outside: &str,
) -> Option<machine::AttachVolumeRequest> {
    let (machine_id, volume) = match call {
        Call::AttachVolumeUnknownMachine => ("nope", Some(file_volume("v", inside))),
        Call::AttachVolumeMissing => (id, None),
        Call::AttachVolumeDuplicate => (id, Some(file_volume("root", inside))),
        Call::AttachVolumeOutsideDirs => (id, Some(file_volume("v", outside))),
        Call::AttachVolumeDotDot => (id, Some(file_volume("v", "../outside.raw"))),
        Call::AttachVolumeSlashName => (id, Some(file_volume("a/b", inside))),
        Call::AttachVolumeNulName => (id, Some(file_volume("a\0b", inside))),
        Call::AttachVolumeBadDriver => {
            let mut v = file_volume("v", inside);
            v.connection.as_mut().unwrap().driver = "ceph".into();
            (id, Some(v))
        }
        Call::AttachVolumeBothSources => {
            let mut v = file_volume("v", inside);
            v.local_disk = Some(machine::LocalDisk::default());
            (id, Some(v))
        }
        _ => return None,
    };
    Some(machine::AttachVolumeRequest {
        machine_id: machine_id.to_owned(),
        volume,
    })
}

async fn check(call: Call, want: Code) {
    let mut rt = InProcess::start().await;
    let live = rt
        .create(machine::MachineSpec {
            network_interfaces: vec![machine::NetworkInterface {
                name: "eth0".into(),
                ..Default::default()
            }],
            ..common::spec(vec![common::local_disk("root", 1 << 20)])
        })
        .await;
    let id = live.metadata.unwrap().id;
    let inside = rt.env.volume_dir.join("ok.raw");
    std::fs::write(&inside, b"").unwrap();
    let outside = rt.env.dir.path().join("outside.raw");
    std::fs::write(&outside, b"").unwrap();
    let inside = inside.display().to_string();
    let outside = outside.display().to_string();
    let c = &mut rt.client;
    let attach = attach_request(call, &id, &inside, &outside);
    let res: Result<(), tonic::Status> = if let Some(request) = attach {
        c.attach_volume(request).await.map(drop)
    } else {
        match call {
            Call::DeleteUnknown => c
                .delete_machine(machine::DeleteMachineRequest {
                    machine_id: "nope".into(),
                })
                .await
                .map(drop),
            Call::DeleteEmptyId => c
                .delete_machine(machine::DeleteMachineRequest::default())
                .await
                .map(drop),
            Call::PowerUnknown => c
                .update_machine_power(machine::UpdateMachinePowerRequest {
                    machine_id: "nope".into(),
                    power: 1,
                })
                .await
                .map(drop),
            Call::PowerInvalid => c
                .update_machine_power(machine::UpdateMachinePowerRequest {
                    machine_id: id.clone(),
                    power: 7,
                })
                .await
                .map(drop),
            Call::AnnotationsUnknown => c
                .update_machine_annotations(machine::UpdateMachineAnnotationsRequest {
                    machine_id: "nope".into(),
                    annotations: Default::default(),
                })
                .await
                .map(drop),
            Call::DetachVolumeUnknownName => c
                .detach_volume(machine::DetachVolumeRequest {
                    machine_id: id.clone(),
                    name: "nope".into(),
                })
                .await
                .map(drop),
            Call::DetachVolumeUnknownMachine => c
                .detach_volume(machine::DetachVolumeRequest {
                    machine_id: "nope".into(),
                    name: "root".into(),
                })
                .await
                .map(drop),
            Call::UpdateVolumeUnknownName => c
                .update_volume(machine::UpdateVolumeRequest {
                    machine_id: id.clone(),
                    volume: Some(file_volume("nope", &inside)),
                })
                .await
                .map(drop),
            Call::AttachNicDuplicate => c
                .attach_network_interface(machine::AttachNetworkInterfaceRequest {
                    machine_id: id.clone(),
                    network_interface: Some(machine::NetworkInterface {
                        name: "eth0".into(),
                        ..Default::default()
                    }),
                })
                .await
                .map(drop),
            Call::DetachNicUnknownName => c
                .detach_network_interface(machine::DetachNetworkInterfaceRequest {
                    machine_id: id.clone(),
                    name: "nope".into(),
                })
                .await
                .map(drop),
            Call::ExecUnknown => c
                .exec(machine::ExecRequest {
                    machine_id: "nope".into(),
                })
                .await
                .map(drop),
            Call::CreateNoMachine => c
                .create_machine(machine::CreateMachineRequest { machine: None })
                .await
                .map(drop),
            Call::CreateNoSpec => c
                .create_machine(machine::CreateMachineRequest {
                    machine: Some(machine::Machine::default()),
                })
                .await
                .map(drop),
            Call::CreateUnknownClass => c
                .create_machine(common::machine_request(machine::MachineSpec {
                    class: "nope".into(),
                    ..Default::default()
                }))
                .await
                .map(drop),
            Call::CreateEmptyClass => c
                .create_machine(common::machine_request(machine::MachineSpec::default()))
                .await
                .map(drop),
            Call::CreateImageOutsideDirs => {
                let mut disk = common::local_disk("root", 0);
                disk.local_disk.as_mut().unwrap().image = Some(machine::ImageSpec {
                    image: "/etc/passwd".into(),
                });
                c.create_machine(common::machine_request(common::spec(vec![disk])))
                    .await
                    .map(drop)
            }
            _ => unreachable!("{call:?} is an AttachVolume call"),
        }
    };
    let code = res.err().map_or(Code::Ok, |s| s.code());
    assert_eq!(code, want, "{call:?}");
    rt.stop().await;
}

#[rstest]
#[case::delete_unknown(Call::DeleteUnknown, Code::NotFound)]
#[case::delete_empty_id(Call::DeleteEmptyId, Code::InvalidArgument)]
#[case::power_unknown(Call::PowerUnknown, Code::NotFound)]
#[case::power_invalid(Call::PowerInvalid, Code::InvalidArgument)]
#[case::annotations_unknown(Call::AnnotationsUnknown, Code::NotFound)]
#[case::attach_volume_unknown_machine(Call::AttachVolumeUnknownMachine, Code::NotFound)]
#[case::attach_volume_missing(Call::AttachVolumeMissing, Code::InvalidArgument)]
#[case::attach_volume_duplicate(Call::AttachVolumeDuplicate, Code::AlreadyExists)]
#[case::attach_volume_outside_dirs(Call::AttachVolumeOutsideDirs, Code::InvalidArgument)]
#[case::attach_volume_dot_dot(Call::AttachVolumeDotDot, Code::InvalidArgument)]
#[case::attach_volume_slash_name(Call::AttachVolumeSlashName, Code::InvalidArgument)]
#[case::attach_volume_nul_name(Call::AttachVolumeNulName, Code::InvalidArgument)]
#[case::attach_volume_bad_driver(Call::AttachVolumeBadDriver, Code::InvalidArgument)]
#[case::attach_volume_both_sources(Call::AttachVolumeBothSources, Code::InvalidArgument)]
#[case::detach_volume_unknown_name(Call::DetachVolumeUnknownName, Code::NotFound)]
#[case::detach_volume_unknown_machine(Call::DetachVolumeUnknownMachine, Code::NotFound)]
#[case::update_volume_unknown_name(Call::UpdateVolumeUnknownName, Code::NotFound)]
#[case::attach_nic_duplicate(Call::AttachNicDuplicate, Code::AlreadyExists)]
#[case::detach_nic_unknown_name(Call::DetachNicUnknownName, Code::NotFound)]
#[case::exec_unknown(Call::ExecUnknown, Code::NotFound)]
#[case::create_no_machine(Call::CreateNoMachine, Code::InvalidArgument)]
#[case::create_no_spec(Call::CreateNoSpec, Code::InvalidArgument)]
#[case::create_unknown_class(Call::CreateUnknownClass, Code::InvalidArgument)]
#[case::create_empty_class(Call::CreateEmptyClass, Code::InvalidArgument)]
#[case::create_image_outside_dirs(Call::CreateImageOutsideDirs, Code::InvalidArgument)]
#[tokio::test]
async fn error_codes(#[case] call: Call, #[case] want: Code) {
    check(call, want).await;
}

#[tokio::test]
async fn metadata_generations_status_and_events() {
    let mut rt = InProcess::start().await;
    let mut request = common::machine_request(common::spec(vec![]));
    // Ids and status sent by the client are ignored.
    let m = request.machine.as_mut().unwrap();
    m.metadata.as_mut().unwrap().id = "client-chosen".into();
    m.status = Some(machine::MachineStatus {
        state: MachineState::MachineRunning as i32,
        ..Default::default()
    });
    m.spec.as_mut().unwrap().ignition_data = b"{\"ignition\":{}}".to_vec();
    m.spec.as_mut().unwrap().network_interfaces = vec![common::nic("eth0")];
    let created = common::create_request(&mut rt.client, request.clone()).await;
    let meta = created.metadata.clone().unwrap();
    assert_ne!(meta.id, "client-chosen");
    assert!(
        meta.created_at > 1_600_000_000_000_000_000,
        "created_at in ns"
    );
    assert_eq!(meta.deleted_at, 0);
    assert_eq!(meta.labels, common::labels(&[("test", "yes")]));
    assert_eq!(meta.annotations, common::labels(&[("note", "kept")]));
    assert_eq!(created.spec, request.machine.unwrap().spec);
    assert_eq!(common::state_of(&created), MachineState::MachinePending);
    common::wait_state(&mut rt.client, &meta.id, MachineState::MachineRunning).await;
    // With --nic-mode tap the NIC attaches, its handle the MAC.
    let nics = &common::wait_for_nic(&mut rt.client, &meta.id, "eth0", true)
        .await
        .status
        .unwrap()
        .network_interfaces;
    assert_eq!(nics.len(), 1);
    assert_eq!(
        nics[0].state,
        machine::NetworkInterfaceState::NetworkInterfaceAttached as i32
    );
    assert!(nics[0].handle.starts_with("52:54:"), "{:?}", nics[0].handle);
    // Ignition reaches the VM as a base64 OEM string.
    let info = rt.env.vm_info(&meta.id).await;
    assert_eq!(
        info["config"]["platform"]["oem_strings"][0],
        "eyJpZ25pdGlvbiI6e319"
    );
    assert_eq!(info["config"]["memory"]["size"], 128 << 20);
    // The VMM is told to create a named tap: the prefix plus 8 hex digits.
    let tap = info["config"]["net"][0]["tap"].as_str().unwrap();
    assert!(
        tap.len() == 10 && tap.starts_with("ct") && tap[2..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{tap:?}"
    );
    assert_eq!(info["config"]["net"][0]["mac"], nics[0].handle.as_str());

    // Annotations are replaced whole.
    rt.client
        .update_machine_annotations(machine::UpdateMachineAnnotationsRequest {
            machine_id: meta.id.clone(),
            annotations: common::labels(&[("other", "1")]),
        })
        .await
        .unwrap();
    let m = common::get(&mut rt.client, &meta.id).await.unwrap();
    assert_eq!(
        m.metadata.as_ref().unwrap().annotations,
        common::labels(&[("other", "1")])
    );

    // A spec change bumps generation; observed_generation catches up.
    common::set_power(&mut rt.client, &meta.id, machine::Power::Off).await;
    let m = common::wait_state(&mut rt.client, &meta.id, MachineState::MachineTerminated).await;
    let generation = m.metadata.as_ref().unwrap().generation;
    assert_eq!(generation, 1);
    common::wait_machine(
        &rt.client,
        &meta.id,
        "observed generation",
        Duration::from_secs(10),
        |m| (m.status.as_ref()?.observed_generation == generation).then_some(()),
    )
    .await;

    // Label selectors and id filters.
    let list = |sel: &[(&str, &str)], id: &str| machine::ListMachinesRequest {
        filter: Some(machine::MachineFilter {
            id: id.into(),
            label_selector: common::labels(sel),
        }),
    };
    let n = |r: tonic::Response<machine::ListMachinesResponse>| r.into_inner().machines.len();
    assert_eq!(
        n(rt.client
            .list_machines(list(&[("test", "yes")], ""))
            .await
            .unwrap()),
        1
    );
    assert_eq!(
        n(rt.client
            .list_machines(list(&[("test", "no")], ""))
            .await
            .unwrap()),
        0
    );
    assert_eq!(
        n(rt.client.list_machines(list(&[], "unknown")).await.unwrap()),
        0
    );

    // Status: every class, cpu/memory resources, quantity from the host.
    let status = rt
        .client
        .status(machine::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .machine_class_status;
    assert_eq!(status.len(), 2);
    let small = status
        .iter()
        .find(|s| s.machine_class.as_ref().unwrap().name == common::CLASS)
        .unwrap();
    let res = &small
        .machine_class
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap()
        .resources;
    assert_eq!(res.get("cpu"), Some(&1));
    assert_eq!(res.get("memory"), Some(&(128 << 20)));
    let cpus = i64::try_from(std::thread::available_parallelism().unwrap().get()).unwrap();
    assert!(
        small.quantity > 0 && small.quantity <= cpus,
        "quantity {}",
        small.quantity
    );

    let version = rt
        .client
        .version(machine::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.runtime_name, "ch-machine-runtime");
    assert!(!version.runtime_version.is_empty());
    // Powered off (`vm.shutdown`: CH drops the serial socket): no console, Unavailable.
    common::eventually("exec unavailable", Duration::from_secs(10), || {
        let mut c = rt.client.clone();
        let id = meta.id.clone();
        async move {
            let status = c
                .exec(machine::ExecRequest { machine_id: id })
                .await
                .err()?;
            (status.code() == Code::Unavailable).then_some(())
        }
    })
    .await;

    // Events: labels of the machine, seconds, time window honoured only when both bounds > 0.
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let events = |from: i64, to: i64| machine::ListEventsRequest {
        filter: Some(machine::EventFilter {
            id: String::new(),
            label_selector: common::labels(&[("test", "yes")]),
            events_from_time: from,
            events_to_time: to,
        }),
    };
    let all = rt
        .client
        .list_events(events(0, 0))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(all.len() >= 3, "{all:?}");
    let spec = all[0].spec.as_ref().unwrap();
    assert!((now - 60..=now + 1).contains(&spec.event_time));
    assert!(!spec.action.is_empty());
    assert_eq!(
        spec.involved_object_meta.as_ref().unwrap().labels,
        common::labels(&[("test", "yes")])
    );
    let none = rt
        .client
        .list_events(events(now - 7200, now - 3600))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(none.is_empty());
    rt.stop().await;
}

/// Where no tap can be made (`--nic-mode none`, or `auto` without CAP_NET_ADMIN), NICs are
/// refused with FailedPrecondition instead of staying Pending forever.
#[tokio::test]
async fn nics_refused_without_taps() {
    let mut rt = InProcess::start_with(NicMode::None).await;
    let nic = machine::NetworkInterface {
        name: "eth0".into(),
        network_id: "net".into(),
        ..Default::default()
    };
    let mut spec = common::spec(vec![]);
    spec.network_interfaces = vec![nic.clone()];
    let status = rt
        .client
        .create_machine(common::machine_request(spec))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("tap"), "{status:?}");
    // A bad NIC name is still InvalidArgument first.
    let mut spec = common::spec(vec![]);
    spec.network_interfaces = vec![machine::NetworkInterface {
        name: "a/b".into(),
        ..Default::default()
    }];
    let status = rt
        .client
        .create_machine(common::machine_request(spec))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let id = rt.create(common::spec(vec![])).await.metadata.unwrap().id;
    let status = rt
        .client
        .attach_network_interface(machine::AttachNetworkInterfaceRequest {
            machine_id: id.clone(),
            network_interface: Some(nic),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let m = common::get(&mut rt.client, &id).await.unwrap();
    assert!(m.spec.unwrap().network_interfaces.is_empty());
    rt.stop().await;
}

/// `auto` resolves to `tap` exactly where CAP_NET_ADMIN is effective and /dev/net/tun opens.
#[test]
fn auto_nic_mode_follows_the_probe() {
    let want = if ch_machine_runtime::config::taps_possible() {
        NicMode::Tap
    } else {
        NicMode::None
    };
    assert_eq!(NicMode::Auto.resolve(), want);
    assert_eq!(NicMode::None.resolve(), NicMode::None);
    assert_eq!(NicMode::Tap.resolve(), NicMode::Tap);
    if common::required("tap") {
        assert!(ch_machine_runtime::config::taps_possible());
    }
}
