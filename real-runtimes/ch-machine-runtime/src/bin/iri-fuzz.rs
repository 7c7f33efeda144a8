//! `iri-fuzz`: sends N random requests to each IRI runtime server and reports what it found.
//!
//! Servers: `mock` (iri-mock-runtime, machine + volume), `ch-sim` (ch-machine-runtime driving
//! ch-sim) and `file-volume` (file-volume-runtime). Each runs as a child process in its own temp
//! dir. Inputs are structure-aware (well-typed requests built with `arbitrary` from a seeded
//! byte stream: strings full of `..`, `/`, NUL, absolute host paths, very long values, known ids;
//! huge and negative sizes; every enum value and out-of-range ones) or wire-level garbage (a
//! request's encoding truncated, bit-flipped, spliced, or random bytes), all sent as raw gRPC
//! frames. Per server it checks: the process never exits (no panic/abort), no call takes longer
//! than `--timeout` (no hang), the temp dir outside the server's own roots is unchanged, and
//! every error code is one a bad input may get (InvalidArgument, NotFound, OutOfRange,
//! FailedPrecondition, AlreadyExists, ResourceExhausted; Unavailable for Exec). `Internal` "failed to decode" answers
//! to garbage come from tonic's protobuf codec and are counted apart (`decode-internal`).
//!
//! ```sh
//! cargo build --release -p ch-machine-runtime -p file-volume-runtime -p iri-mock --bins
//! target/release/iri-fuzz --inputs 1000000 --seed 1
//! ```
//!
//! Exit code 0 when nothing was found, 1 otherwise.
#![allow(clippy::print_stdout)]

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use arbitrary::Unstructured;
use clap::Parser;
use iri_spec::{machine::v1alpha1 as machine, meta::v1alpha1 as meta, volume::v1alpha1 as volume};
use prost::{Message as _, bytes::Buf as _};
use rand::{RngCore as _, SeedableRng as _};
use tonic::{Code, transport::Channel};

/// Fuzz the IRI runtime servers
#[derive(Debug, Parser)]
#[command(name = "iri-fuzz")]
struct Args {
    /// Inputs per server
    #[arg(long, default_value_t = 10_000)]
    inputs: u64,
    /// Seed of the input stream
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Servers to fuzz (comma-separated): mock, ch-sim, file-volume
    #[arg(long, value_delimiter = ',', default_value = "mock,ch-sim,file-volume")]
    servers: Vec<String>,
    /// A call taking longer than this is a hang
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Longest generated string in bytes (long ids echoed in error messages once reset the
    /// client's connection; the servers now cap `grpc-message`, see RELIABILITY.md)
    #[arg(long, default_value_t = 131_070)]
    max_string: usize,
    /// Directory of the runtime binaries (default: this binary's directory)
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// Bytes in, bytes out: requests are sent exactly as generated (also when malformed).
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        Self
    }
    fn decoder(&mut self) -> Self::Decoder {
        Self
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// What the generator knows about the server under test.
#[derive(Debug, Default)]
struct Ctx {
    machine_ids: Vec<String>,
    volume_ids: Vec<String>,
    snapshot_ids: Vec<String>,
    /// Paths the server may legitimately be given (volume files, images).
    good_paths: Vec<String>,
    /// A file outside every root.
    outside: String,
    /// Longest generated string.
    max_string: usize,
}

fn pick<'a, T>(u: &mut Unstructured<'_>, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        return None;
    }
    u.choose(items).ok()
}

fn string(u: &mut Unstructured<'_>, ctx: &Ctx) -> String {
    let choice: u8 = u.arbitrary().unwrap_or(0);
    match choice % 16 {
        0 => String::new(),
        1 => "a".into(),
        2 => pick(u, &ctx.machine_ids).cloned().unwrap_or_default(),
        3 => pick(u, &ctx.volume_ids).cloned().unwrap_or_default(),
        4 => pick(u, &ctx.snapshot_ids).cloned().unwrap_or_default(),
        5 => "../../../../etc/passwd".into(),
        6 => "/etc/shadow".into(),
        7 => ctx.outside.clone(),
        8 => "a\0b".into(),
        9 => "x".repeat(u.int_in_range(0..=ctx.max_string).unwrap_or(0)),
        10 => "..".into(),
        11 => "/".into(),
        12 => "file:///etc/passwd".into(),
        13 => pick(u, &ctx.good_paths).cloned().unwrap_or_default(),
        14 => format!(
            "{}/../{}",
            pick(u, &ctx.good_paths).cloned().unwrap_or_default(),
            ctx.outside
        ),
        _ => u.arbitrary::<String>().unwrap_or_default(),
    }
}

fn size(u: &mut Unstructured<'_>) -> i64 {
    let choice: u8 = u.arbitrary().unwrap_or(0);
    match choice % 10 {
        0 => 0,
        1 => -1,
        2 => 1 << 20,
        3 => 1 << 30,
        4 => 1 << 62,
        5 => i64::MAX,
        6 => i64::MIN,
        7 => 4095,
        _ => u.arbitrary().unwrap_or(0),
    }
}

fn enum_value(u: &mut Unstructured<'_>) -> i32 {
    let choice: u8 = u.arbitrary().unwrap_or(0);
    match choice % 6 {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => -1,
        4 => i32::MAX,
        _ => u.arbitrary().unwrap_or(0),
    }
}

fn map(u: &mut Unstructured<'_>, ctx: &Ctx) -> HashMap<String, String> {
    let n = u.int_in_range(0..=3).unwrap_or(0);
    (0..n).map(|_| (string(u, ctx), string(u, ctx))).collect()
}

fn bytes_map(u: &mut Unstructured<'_>, ctx: &Ctx) -> HashMap<String, Vec<u8>> {
    let n = u.int_in_range(0..=2).unwrap_or(0);
    (0..n)
        .map(|_| (string(u, ctx), string(u, ctx).into_bytes()))
        .collect()
}

fn metadata(u: &mut Unstructured<'_>, ctx: &Ctx) -> Option<meta::ObjectMetadata> {
    u.arbitrary::<bool>()
        .unwrap_or(false)
        .then(|| meta::ObjectMetadata {
            id: string(u, ctx),
            annotations: map(u, ctx),
            labels: map(u, ctx),
            generation: size(u),
            created_at: size(u),
            deleted_at: size(u),
        })
}

fn machine_volume(u: &mut Unstructured<'_>, ctx: &Ctx) -> machine::Volume {
    let local = u.arbitrary::<bool>().unwrap_or(false);
    let both = u.ratio(1u8, 8).unwrap_or(false);
    machine::Volume {
        name: string(u, ctx),
        device: string(u, ctx),
        local_disk: (local || both).then(|| machine::LocalDisk {
            size_bytes: size(u),
            image: u
                .arbitrary::<bool>()
                .unwrap_or(false)
                .then(|| machine::ImageSpec {
                    image: string(u, ctx),
                }),
        }),
        connection: (!local || both).then(|| {
            let mut attributes = map(u, ctx);
            if u.arbitrary::<bool>().unwrap_or(false) {
                let format = *u.choose(&["raw", "qcow2", "vmdk", ""]).unwrap_or(&"raw");
                attributes.insert("format".into(), format.into());
            }
            machine::VolumeConnection {
                driver: if u.ratio(3u8, 4).unwrap_or(true) {
                    "local-file".into()
                } else {
                    string(u, ctx)
                },
                handle: string(u, ctx),
                attributes,
                secret_data: bytes_map(u, ctx),
                encryption_data: bytes_map(u, ctx),
                effective_storage_bytes: size(u),
            }
        }),
    }
}

fn nic(u: &mut Unstructured<'_>, ctx: &Ctx) -> machine::NetworkInterface {
    machine::NetworkInterface {
        name: string(u, ctx),
        network_id: string(u, ctx),
        ips: (0..u.int_in_range(0..=2).unwrap_or(0))
            .map(|_| string(u, ctx))
            .collect(),
        attributes: map(u, ctx),
    }
}

fn machine_spec(u: &mut Unstructured<'_>, ctx: &Ctx) -> machine::MachineSpec {
    let volumes = match u.int_in_range(0u8..=9).unwrap_or(0) {
        9 => 40, // more devices than any VMM has slots
        n => usize::from(n % 4),
    };
    machine::MachineSpec {
        power: enum_value(u),
        class: if u.ratio(2u8, 3).unwrap_or(true) {
            "small".into()
        } else {
            string(u, ctx)
        },
        ignition_data: string(u, ctx).into_bytes(),
        volumes: (0..volumes).map(|_| machine_volume(u, ctx)).collect(),
        network_interfaces: (0..u.int_in_range(0..=2).unwrap_or(0))
            .map(|_| nic(u, ctx))
            .collect(),
        guest_config: None,
    }
}

/// One machine-runtime request: (method, encoded request).
fn machine_request(u: &mut Unstructured<'_>, ctx: &Ctx) -> (&'static str, Vec<u8>) {
    let id = |u: &mut Unstructured<'_>| string(u, ctx);
    match u.int_in_range(0u8..=13).unwrap_or(0) {
        0 => (
            "Version",
            machine::VersionRequest { version: id(u) }.encode_to_vec(),
        ),
        1 => (
            "ListEvents",
            machine::ListEventsRequest {
                filter: Some(machine::EventFilter {
                    id: id(u),
                    label_selector: map(u, ctx),
                    events_from_time: size(u),
                    events_to_time: size(u),
                }),
            }
            .encode_to_vec(),
        ),
        2 => (
            "ListMachines",
            machine::ListMachinesRequest {
                filter: Some(machine::MachineFilter {
                    id: id(u),
                    label_selector: map(u, ctx),
                }),
            }
            .encode_to_vec(),
        ),
        3 | 4 => (
            "CreateMachine",
            machine::CreateMachineRequest {
                machine: u.ratio(7u8, 8).unwrap_or(true).then(|| machine::Machine {
                    metadata: metadata(u, ctx),
                    spec: u
                        .ratio(7u8, 8)
                        .unwrap_or(true)
                        .then(|| machine_spec(u, ctx)),
                    status: None,
                }),
            }
            .encode_to_vec(),
        ),
        5 => (
            "DeleteMachine",
            machine::DeleteMachineRequest { machine_id: id(u) }.encode_to_vec(),
        ),
        6 => (
            "UpdateMachineAnnotations",
            machine::UpdateMachineAnnotationsRequest {
                machine_id: id(u),
                annotations: map(u, ctx),
            }
            .encode_to_vec(),
        ),
        7 => (
            "UpdateMachinePower",
            machine::UpdateMachinePowerRequest {
                machine_id: id(u),
                power: enum_value(u),
            }
            .encode_to_vec(),
        ),
        8 => (
            "AttachVolume",
            machine::AttachVolumeRequest {
                machine_id: id(u),
                volume: Some(machine_volume(u, ctx)),
            }
            .encode_to_vec(),
        ),
        9 => (
            "DetachVolume",
            machine::DetachVolumeRequest {
                machine_id: id(u),
                name: id(u),
            }
            .encode_to_vec(),
        ),
        10 => (
            "UpdateVolume",
            machine::UpdateVolumeRequest {
                machine_id: id(u),
                volume: Some(machine_volume(u, ctx)),
            }
            .encode_to_vec(),
        ),
        11 => (
            "AttachNetworkInterface",
            machine::AttachNetworkInterfaceRequest {
                machine_id: id(u),
                network_interface: Some(nic(u, ctx)),
            }
            .encode_to_vec(),
        ),
        12 => (
            "DetachNetworkInterface",
            machine::DetachNetworkInterfaceRequest {
                machine_id: id(u),
                name: id(u),
            }
            .encode_to_vec(),
        ),
        _ => (
            if u.arbitrary::<bool>().unwrap_or(false) {
                "Status"
            } else {
                "Exec"
            },
            machine::ExecRequest { machine_id: id(u) }.encode_to_vec(),
        ),
    }
}

/// One volume-runtime request: (method, encoded request).
fn volume_request(u: &mut Unstructured<'_>, ctx: &Ctx) -> (&'static str, Vec<u8>) {
    let id = |u: &mut Unstructured<'_>| string(u, ctx);
    match u.int_in_range(0u8..=9).unwrap_or(0) {
        0 => (
            "Version",
            volume::VersionRequest { version: id(u) }.encode_to_vec(),
        ),
        1 => (
            "ListVolumes",
            volume::ListVolumesRequest {
                filter: Some(volume::VolumeFilter {
                    id: id(u),
                    label_selector: map(u, ctx),
                }),
            }
            .encode_to_vec(),
        ),
        2 | 3 => {
            let source = match u.int_in_range(0u8..=3).unwrap_or(0) {
                0 => None,
                1 => Some(volume::VolumeDataSource {
                    image_data_source: Some(volume::ImageDataSource {
                        image: id(u),
                        architecture: id(u),
                    }),
                    snapshot_data_source: None,
                }),
                2 => Some(volume::VolumeDataSource {
                    image_data_source: None,
                    snapshot_data_source: Some(volume::SnapshotDataSource { snapshot_id: id(u) }),
                }),
                _ => Some(volume::VolumeDataSource {
                    image_data_source: Some(volume::ImageDataSource {
                        image: id(u),
                        architecture: id(u),
                    }),
                    snapshot_data_source: Some(volume::SnapshotDataSource { snapshot_id: id(u) }),
                }),
            };
            let class = match u.int_in_range(0u8..=2).unwrap_or(0) {
                0 => "std".to_owned(),
                1 => "q".to_owned(),
                _ => id(u),
            };
            (
                "CreateVolume",
                volume::CreateVolumeRequest {
                    volume: Some(volume::Volume {
                        metadata: metadata(u, ctx),
                        spec: Some(volume::VolumeSpec {
                            class,
                            resources: u.ratio(7u8, 8).unwrap_or(true).then(|| {
                                volume::VolumeResources {
                                    storage_bytes: size(u),
                                }
                            }),
                            encryption: u.ratio(1u8, 8).unwrap_or(false).then(|| {
                                volume::EncryptionSpec {
                                    secret_data: bytes_map(u, ctx),
                                }
                            }),
                            volume_data_source: source,
                        }),
                        status: None,
                    }),
                }
                .encode_to_vec(),
            )
        }
        4 => (
            "ExpandVolume",
            volume::ExpandVolumeRequest {
                volume_id: id(u),
                resources: Some(volume::VolumeResources {
                    storage_bytes: size(u),
                }),
            }
            .encode_to_vec(),
        ),
        5 => (
            "DeleteVolume",
            volume::DeleteVolumeRequest { volume_id: id(u) }.encode_to_vec(),
        ),
        6 => (
            "CreateVolumeSnapshot",
            volume::CreateVolumeSnapshotRequest {
                volume_snapshot: Some(volume::VolumeSnapshot {
                    metadata: metadata(u, ctx),
                    spec: Some(volume::VolumeSnapshotSpec { volume_id: id(u) }),
                    status: None,
                }),
            }
            .encode_to_vec(),
        ),
        7 => (
            "DeleteVolumeSnapshot",
            volume::DeleteVolumeSnapshotRequest {
                volume_snapshot_id: id(u),
            }
            .encode_to_vec(),
        ),
        8 => (
            "ListVolumeSnapshots",
            volume::ListVolumeSnapshotsRequest { filter: None }.encode_to_vec(),
        ),
        _ => ("Status", volume::StatusRequest {}.encode_to_vec()),
    }
}

/// Wire-level garbage from a valid encoding.
fn mutate(u: &mut Unstructured<'_>, mut bytes: Vec<u8>) -> Vec<u8> {
    match u.int_in_range(0u8..=4).unwrap_or(0) {
        0 => {
            let at = u.int_in_range(0..=bytes.len()).unwrap_or(0);
            bytes.truncate(at);
        }
        1 => {
            for _ in 0..u.int_in_range(1..=8).unwrap_or(1) {
                if bytes.is_empty() {
                    break;
                }
                let at = u.int_in_range(0..=bytes.len() - 1).unwrap_or(0);
                bytes[at] ^= u.arbitrary::<u8>().unwrap_or(0xff) | 1;
            }
        }
        2 => {
            let at = u.int_in_range(0..=bytes.len()).unwrap_or(0);
            let junk: Vec<u8> = u.arbitrary().unwrap_or_default();
            bytes.splice(at..at, junk);
        }
        3 => {
            // A field with a wrong wire type: field 1 as fixed64 / field 2 as varint.
            let mut b = vec![0x09];
            b.extend(u.arbitrary::<[u8; 8]>().unwrap_or_default());
            b.extend([0x10, 0xff, 0xff, 0xff, 0xff, 0x0f]);
            bytes = b;
        }
        _ => bytes = u.arbitrary().unwrap_or_default(),
    }
    bytes
}

/// A server under test.
struct Server {
    name: &'static str,
    child: Child,
    dir: tempfile::TempDir,
    /// (service, channel): the gRPC service name and a channel to its socket.
    services: Vec<(&'static str, Channel)>,
    /// Directories the server may write (relative to `dir`).
    roots: Vec<PathBuf>,
    ctx: Ctx,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // VMMs (ch-sim) the runtime left running.
        let needle = self.dir.path().display().to_string();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for pid in entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            {
                let mentions = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle));
                if mentions && let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
    }
}

async fn connect(socket: &Path) -> anyhow::Result<Channel> {
    let endpoint = iri_spec::endpoint::Endpoint::unix(socket);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match iri_spec::endpoint::connect(&endpoint).await {
            Ok(channel) => return Ok(channel),
            Err(e) if Instant::now() > deadline => {
                return Err(anyhow::anyhow!("connect {}: {e}", socket.display()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// The server's stderr goes to `<dir>/stderr.log` (outside the checked tree), where panics
/// are looked for afterwards.
fn spawn(bin: &Path, args: &[String], dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join("stderr.log"))?;
    Command::new(bin)
        .args(args)
        .env("RUST_LOG", "error")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawn {}", bin.display()))
}

async fn start(name: &str, bins: &Path, max_string: usize) -> anyhow::Result<Server> {
    let dir = tempfile::Builder::new().prefix("fz").tempdir_in("/tmp")?;
    let p = dir.path();
    std::fs::create_dir_all(p.join("outside"))?;
    std::fs::write(p.join("outside/secret"), b"HOST-SECRET")?;
    std::fs::create_dir_all(p.join("images"))?;
    std::fs::write(p.join("images/root.img"), vec![0x5a; 1 << 16])?;
    std::fs::create_dir_all(p.join("vols"))?;
    std::fs::write(p.join("vols/v.raw"), vec![0; 1 << 16])?;
    let s = |p: PathBuf| p.display().to_string();
    let mut ctx = Ctx {
        outside: s(p.join("outside/secret")),
        good_paths: vec![s(p.join("images/root.img")), s(p.join("vols/v.raw"))],
        max_string,
        ..Ctx::default()
    };
    ctx.good_paths.push("root.img".into());
    let (child, services, roots): (Child, Vec<(&'static str, PathBuf)>, Vec<PathBuf>) = match name {
        "mock" => (
            spawn(
                &bins.join("iri-mock-runtime"),
                &[
                    "--machine-socket".into(),
                    s(p.join("m.sock")),
                    "--volume-socket".into(),
                    s(p.join("v.sock")),
                    "--machine-class".into(),
                    "small:cpu=1,memory=128Mi".into(),
                    "--volume-class".into(),
                    "std:tps=100Mi,iops=1000".into(),
                ],
                p,
            )?,
            vec![
                ("machine.v1alpha1.MachineRuntime", p.join("m.sock")),
                ("volume.v1alpha1.VolumeRuntime", p.join("v.sock")),
            ],
            vec![],
        ),
        "ch-sim" => {
            std::fs::write(p.join("kernel"), b"not a kernel: ch-sim only opens it")?;
            (
                spawn(
                    &bins.join("ch-machine-runtime"),
                    &[
                        "--socket".into(),
                        s(p.join("m.sock")),
                        "--state-dir".into(),
                        s(p.join("state")),
                        "--ch-binary".into(),
                        s(bins.join("ch-sim")),
                        "--kernel".into(),
                        s(p.join("kernel")),
                        "--cmdline".into(),
                        "halt".into(),
                        "--machine-class".into(),
                        "small,1,134217728".into(),
                        "--volume-dir".into(),
                        s(p.join("vols")),
                        "--image-dir".into(),
                        s(p.join("images")),
                        "--resync-interval".into(),
                        "1s".into(),
                    ],
                    p,
                )?,
                vec![("machine.v1alpha1.MachineRuntime", p.join("m.sock"))],
                vec![PathBuf::from("state")],
            )
        }
        "file-volume" => (
            spawn(
                &bins.join("file-volume-runtime"),
                &[
                    "--socket".into(),
                    s(p.join("v.sock")),
                    "--root".into(),
                    s(p.join("root")),
                    "--image-dir".into(),
                    s(p.join("images")),
                    "--volume-class".into(),
                    "std,1000,100".into(),
                    "--volume-class".into(),
                    "q,1000,100,qcow2".into(),
                    "--max-volume-bytes".into(),
                    (1u64 << 30).to_string(),
                ],
                p,
            )?,
            vec![("volume.v1alpha1.VolumeRuntime", p.join("v.sock"))],
            vec![PathBuf::from("root")],
        ),
        other => anyhow::bail!("unknown server {other:?} (mock, ch-sim, file-volume)"),
    };
    let mut channels = Vec::new();
    for (service, socket) in services {
        channels.push((service, connect(&socket).await?));
    }
    Ok(Server {
        name: match name {
            "mock" => "mock",
            "ch-sim" => "ch-sim",
            _ => "file-volume",
        },
        child,
        dir,
        services: channels,
        roots,
        ctx,
    })
}

/// Every file under `dir` outside `roots` and the sockets: (path, len, mtime).
fn tree(dir: &Path, roots: &[PathBuf]) -> BTreeMap<PathBuf, (u64, i128)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(dir).unwrap_or(&path).to_owned();
            if roots.iter().any(|r| rel.starts_with(r))
                || rel.extension().is_some_and(|x| x == "sock")
                || rel == Path::new("stderr.log")
            {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(path);
            }
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
            out.insert(rel, (if m.is_dir() { 0 } else { m.len() }, mtime));
        }
    }
    out
}

#[derive(Debug, Default)]
struct Report {
    inputs: u64,
    garbage: u64,
    codes: BTreeMap<String, u64>,
    decode_internal: u64,
    /// One message per code (and whether the input was garbage, and its size).
    samples: BTreeMap<String, String>,
    findings: BTreeMap<String, (u64, String)>,
    crashed: Option<String>,
    panics: Vec<String>,
    hangs: u64,
    tree_changes: Vec<String>,
    secs: f64,
}

impl Report {
    fn failed(&self) -> bool {
        !self.findings.is_empty()
            || self.crashed.is_some()
            || !self.panics.is_empty()
            || self.hangs > 0
            || !self.tree_changes.is_empty()
    }
}

fn allowed(code: Code) -> bool {
    matches!(
        code,
        Code::Ok
            | Code::InvalidArgument
            | Code::NotFound
            | Code::OutOfRange
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::ResourceExhausted
    )
}

/// [`allowed`], plus Unavailable for Exec of a machine whose VMM does not run (yet): reference
/// §2.1.
fn allowed_for(method: &str, code: Code) -> bool {
    allowed(code) || (method == "Exec" && code == Code::Unavailable)
}

fn learn(ctx: &mut Ctx, method: &str, reply: &[u8]) {
    let id = match method {
        "CreateMachine" => machine::CreateMachineResponse::decode(reply)
            .ok()
            .and_then(|r| r.machine?.metadata)
            .map(|m| (0, m.id)),
        "CreateVolume" => volume::CreateVolumeResponse::decode(reply)
            .ok()
            .and_then(|r| r.volume?.metadata)
            .map(|m| (1, m.id)),
        "CreateVolumeSnapshot" => volume::CreateVolumeSnapshotResponse::decode(reply)
            .ok()
            .and_then(|r| r.volume_snapshot?.metadata)
            .map(|m| (2, m.id)),
        _ => None,
    };
    if let Some((kind, id)) = id {
        let list = match kind {
            0 => &mut ctx.machine_ids,
            1 => &mut ctx.volume_ids,
            _ => &mut ctx.snapshot_ids,
        };
        list.push(id);
        if list.len() > 16 {
            list.remove(0);
        }
    }
}

async fn fuzz(server: &mut Server, args: &Args, seed: u64) -> Report {
    let mut report = Report::default();
    let before = tree(server.dir.path(), &server.roots);
    let etc_before = std::fs::metadata("/etc/passwd")
        .and_then(|m| m.modified())
        .ok();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; 4096];
    let started = Instant::now();
    for _ in 0..args.inputs {
        rng.fill_bytes(&mut buf);
        let mut u = Unstructured::new(&buf);
        let which = u.int_in_range(0..=server.services.len() - 1).unwrap_or(0);
        let (service, channel) = server.services[which].clone();
        let (method, mut bytes) = if service.starts_with("machine") {
            machine_request(&mut u, &server.ctx)
        } else {
            volume_request(&mut u, &server.ctx)
        };
        let garbage = u.ratio(1u8, 4).unwrap_or(false);
        if garbage {
            bytes = mutate(&mut u, bytes);
            report.garbage += 1;
        }
        let input_len = bytes.len();
        let path = format!("/{service}/{method}");
        let mut grpc = tonic::client::Grpc::new(channel);
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let path = http::uri::PathAndQuery::try_from(path.clone())
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
            grpc.unary(tonic::Request::new(bytes), path, RawCodec).await
        };
        report.inputs += 1;
        match tokio::time::timeout(args.timeout, call).await {
            Err(_) => {
                report.hangs += 1;
                *report.codes.entry(format!("hang {method}")).or_default() += 1;
            }
            Ok(Ok(reply)) => {
                *report.codes.entry("Ok".into()).or_default() += 1;
                learn(&mut server.ctx, method, reply.get_ref());
            }
            Ok(Err(status)) => {
                report
                    .samples
                    .entry(format!("{:?}", status.code()))
                    .or_insert_with(|| {
                        format!(
                            "{method} garbage={garbage} {} bytes: {}",
                            input_len,
                            status.message().chars().take(120).collect::<String>()
                        )
                    });
                *report
                    .codes
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
                if garbage
                    && status.code() == Code::Internal
                    && status.message().contains("failed to decode")
                {
                    report.decode_internal += 1;
                } else if !allowed_for(method, status.code()) {
                    let msg: String = status.message().chars().take(160).collect();
                    let key = format!("{method} {:?}", status.code());
                    let entry = report.findings.entry(key).or_insert((0, msg));
                    entry.0 += 1;
                }
            }
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            report.crashed = Some(format!("{} exited: {status}", server.name));
            break;
        }
        // Keep the number of live machines (and ch-sim processes) bounded.
        if server.ctx.machine_ids.len() >= 16
            && let Some(id) = server.ctx.machine_ids.first().cloned()
            && let Some((_, channel)) = server.services.first().cloned()
        {
            let mut client = machine::machine_runtime_client::MachineRuntimeClient::new(channel);
            let _ = client
                .delete_machine(machine::DeleteMachineRequest { machine_id: id })
                .await;
            server.ctx.machine_ids.remove(0);
        }
    }
    report.secs = started.elapsed().as_secs_f64();
    let after = tree(server.dir.path(), &server.roots);
    for (path, meta) in &after {
        if before.get(path) != Some(meta) {
            report
                .tree_changes
                .push(format!("changed or created {}", path.display()));
        }
    }
    for path in before.keys() {
        if !after.contains_key(path) {
            report
                .tree_changes
                .push(format!("removed {}", path.display()));
        }
    }
    let log = std::fs::read_to_string(server.dir.path().join("stderr.log")).unwrap_or_default();
    report.panics = log
        .lines()
        .filter(|l| l.contains("panicked at"))
        .map(str::to_owned)
        .collect();
    if std::fs::metadata("/etc/passwd")
        .and_then(|m| m.modified())
        .ok()
        != etc_before
    {
        report.tree_changes.push("/etc/passwd changed".into());
    }
    report
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let bins = args.bin_dir.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_owned))
            .unwrap_or_default()
    });
    let mut failed = false;
    for (i, name) in args.servers.iter().enumerate() {
        let mut server = match start(name, &bins, args.max_string).await {
            Ok(server) => server,
            Err(e) => {
                println!("{name:<12} failed to start: {e:#}");
                failed = true;
                continue;
            }
        };
        let seed = args.seed.wrapping_add(i as u64);
        let report = fuzz(&mut server, &args, seed).await;
        let rate = report.inputs as f64 / report.secs.max(1e-9);
        println!(
            "{:<12} seed {seed}: {} inputs ({} wire garbage) in {:.1} s = {:.0} inputs/s; \
             crashes {}, panics {}, hangs {}, files touched outside roots {}, findings {}",
            server.name,
            report.inputs,
            report.garbage,
            report.secs,
            rate,
            usize::from(report.crashed.is_some()),
            report.panics.len(),
            report.hangs,
            report.tree_changes.len(),
            report.findings.len(),
        );
        println!("{:<12} codes: {:?}", "", report.codes);
        for (code, sample) in &report.samples {
            println!("{:<12} e.g. {code}: {sample}", "");
        }
        if report.decode_internal > 0 {
            println!(
                "{:<12} decode-internal: {} garbage frames answered Internal \"failed to decode\" by tonic's codec",
                "", report.decode_internal
            );
        }
        if let Some(crash) = &report.crashed {
            println!("{:<12} CRASH: {crash}", "");
        }
        for panic in &report.panics {
            println!("{:<12} PANIC: {panic}", "");
        }
        for change in &report.tree_changes {
            println!("{:<12} FILE: {change}", "");
        }
        for (key, (count, msg)) in &report.findings {
            println!("{:<12} FINDING: {key} x{count}: {msg}", "");
        }
        failed |= report.failed();
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
