//! Runtime stacks: a file-volume-runtime beside an environment's machine runtime (its root the
//! machine runtime's volume dir), and [`Runtimes`], both runtimes as child processes for suites.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use iri_spec::{
    endpoint::Endpoint,
    volume::v1alpha1::{self as volume, volume_runtime_client::VolumeRuntimeClient},
};
use tonic::transport::Channel;

use super::{
    env::Env,
    host::{Backend, Proc, Reaper, eventually, sibling_binary},
};

/// A file-volume-runtime on `<env>/volume.sock` with its root at the env's volume dir and the
/// class [`VOLUME_CLASS`] (raw), then `extra` arguments.
fn spawn_volume_runtime(env: &Env, extra: &[String]) -> Proc {
    let socket = env.dir.path().join("volume.sock");
    let mut args = vec![
        "--socket".into(),
        socket.display().to_string(),
        "--root".into(),
        env.volume_dir.display().to_string(),
        "--volume-class".into(),
        format!("{VOLUME_CLASS},1000,100"),
    ];
    args.extend_from_slice(extra);
    Proc::spawn(
        &sibling_binary("file-volume-runtime", "file-volume-runtime"),
        &args,
        &socket,
    )
}

/// Start a file-volume-runtime and create one raw volume; returns (process, client, handle).
pub async fn file_volume_runtime(
    env: &Env,
    size: i64,
) -> (Proc, VolumeRuntimeClient<Channel>, String) {
    let proc = spawn_volume_runtime(env, &[]);
    let mut client = VolumeRuntimeClient::new(proc.channel().await);
    let created = client
        .create_volume(volume::CreateVolumeRequest {
            volume: Some(volume::Volume {
                metadata: None,
                spec: Some(volume::VolumeSpec {
                    class: VOLUME_CLASS.into(),
                    resources: Some(volume::VolumeResources {
                        storage_bytes: size,
                    }),
                    ..Default::default()
                }),
                status: None,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    // The create response is PENDING without access; the listed volume has it.
    let vol = client
        .list_volumes(volume::ListVolumesRequest {
            filter: Some(volume::VolumeFilter {
                id: created.metadata.unwrap().id,
                label_selector: HashMap::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .volumes
        .pop()
        .unwrap();
    let access = vol.status.unwrap().access.unwrap();
    assert_eq!(access.driver, "local-file");
    (proc, client, access.handle)
}

// ---- runtime stacks for suites ---------------------------------------------------------------

/// The VMM a [`Runtimes`] stack drives.
#[derive(Debug, Clone)]
pub enum Vmm {
    /// `ch-sim` (or the real CH in `Backend`) through `--vmm cloud-hypervisor`.
    CloudHypervisor(Backend),
    /// `--vmm qemu` with this binary and `--qemu-accel` value.
    Qemu {
        binary: PathBuf,
        accel: &'static str,
    },
}

/// A machine runtime and a file-volume-runtime as child processes on unix sockets in one temp
/// dir, sharing the volume dir (the volume runtime's `local-file` handles attach as disks) and
/// an image dir holding one image file. Dropping it kills both runtimes and every VMM they
/// started. This is what suites (the conformance RPC level, and later its lifecycle level) run
/// against: [`Runtimes::machine`] and [`Runtimes::volume`] are their endpoints.
pub struct Runtimes {
    /// The machine runtime's endpoint.
    pub machine: Endpoint,
    /// The volume runtime's endpoint.
    pub volume: Endpoint,
    /// A local-disk image file inside both runtimes' image dirs.
    pub image: PathBuf,
    /// The machine runtime's environment (dirs, serial logs, recorded pids).
    pub env: Env,
    machine_proc: Proc,
    volume_proc: Proc,
    _reaper: Reaper,
}

/// The machine runtime stack's volume class (raw files).
pub const VOLUME_CLASS: &str = "std";

impl Runtimes {
    /// Starts both runtimes and waits until they answer; `None` (after one skip line) when the
    /// PVH stub cannot be assembled for a real VMM. `extra` is appended to the machine runtime's
    /// arguments.
    pub async fn start(vmm: Vmm, extra: &[&str]) -> Option<Self> {
        Self::start_with_cmdline(vmm, "halt", extra).await
    }

    /// [`Runtimes::start`] with the guest's `cmdline` (`echo`: the stub echoes its serial input).
    pub async fn start_with_cmdline(vmm: Vmm, cmdline: &str, extra: &[&str]) -> Option<Self> {
        let backend = match &vmm {
            Vmm::CloudHypervisor(backend) => backend.clone(),
            Vmm::Qemu { binary, .. } => Backend::RealCh(binary.clone()),
        };
        let mut env = Env::new(backend, cmdline)?;
        let reaper = Reaper::for_env(&env);
        let image = env.image_dir.join("root.img");
        std::fs::write(&image, vec![0x5a; 1 << 20]).unwrap();
        let mut all = Vec::new();
        if let Vmm::Qemu { binary, accel } = &vmm {
            env.qemu = Some(binary.clone());
            all.extend(["--qemu-accel", accel]);
        }
        all.extend_from_slice(extra);
        let machine_proc = env.start_with(&all);
        let volume_proc = spawn_volume_runtime(
            &env,
            &["--image-dir".into(), env.image_dir.display().to_string()],
        );
        let runtimes = Self {
            machine: Endpoint::unix(&env.socket),
            volume: Endpoint::unix(&volume_proc.socket),
            image,
            env,
            machine_proc,
            volume_proc,
            _reaper: reaper,
        };
        for endpoint in [&runtimes.machine, &runtimes.volume] {
            accepting(endpoint).await;
        }
        Some(runtimes)
    }

    /// The machine runtime's pid.
    pub fn machine_pid(&self) -> i32 {
        self.machine_proc.pid()
    }

    /// The volume runtime's pid.
    pub fn volume_pid(&self) -> i32 {
        self.volume_proc.pid()
    }
}

/// Wait until `endpoint` accepts a gRPC connection (the socket file appears at bind(), a moment
/// before listen(), so refused connects are retried).
pub async fn accepting(endpoint: &Endpoint) -> Channel {
    eventually(
        &format!("{endpoint} accepting"),
        Duration::from_secs(30),
        || async { iri_spec::endpoint::connect(endpoint).await.ok() },
    )
    .await
}
