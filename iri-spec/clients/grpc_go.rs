//! Runs `iri-spec/clients/grpc_go/main.go` (Debian's grpc-go 1.33.3, built in GOPATH mode from
//! `golang-google-grpc-dev`) against a runtime socket. grpc-go dials the socket path through a
//! custom dialer, so it sends the **raw** socket path as `:authority` (the form grpc-java and
//! netty send too). The Go program forwards bytes only; requests and responses are prost's.
//! Included by path by the serving tests of every runtime binary, next to `grpcio.rs` as module
//! `grpcio` (whose `skip` it shares); the component name in `IRIKIT_REQUIRE` is `go-grpc`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::OnceLock,
};

use iri_spec::{
    bucket::v1alpha1 as bucket, machine::v1alpha1 as machine, meta::v1alpha1::ObjectMetadata,
    volume::v1alpha1 as volume,
};
use prost::Message;

/// The `IRIKIT_REQUIRE` name of this client stack.
pub const COMPONENT: &str = "go-grpc";
/// Where Debian's `golang-*-dev` packages put their sources (a GOPATH).
const GOPATH: &str = "/usr/share/gocode";
/// gRPC's NOT_FOUND.
pub const NOT_FOUND: i32 = 5;

fn source_dir(manifest_dir: &str) -> PathBuf {
    let mut dir = PathBuf::from(manifest_dir);
    while !dir.join("iri-spec/clients/grpc_go/main.go").is_file() {
        assert!(dir.pop(), "iri-spec/clients not found above {manifest_dir}");
    }
    dir.join("iri-spec/clients/grpc_go")
}

/// The client binary, built once per test process; `None` (one `skip:` line, or a failure
/// when `go-grpc` is required) when Go or Debian's grpc-go sources are missing.
pub fn available(manifest_dir: &str) -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        if !Path::new(GOPATH)
            .join("src/google.golang.org/grpc/clientconn.go")
            .is_file()
        {
            return Err(format!(
                "Debian's golang-google-grpc-dev is not installed ({GOPATH} has no grpc-go)"
            ));
        }
        let out_dir = std::env::temp_dir().join(format!("irikit-grpc-go-{}", std::process::id()));
        std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
        let bin = out_dir.join("grpc_go");
        let out = Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&bin)
            .arg(".")
            .current_dir(source_dir(manifest_dir))
            .env("GOPATH", GOPATH)
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .output()
            .map_err(|e| format!("go not runnable: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "go build of the grpc-go client failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(bin)
    });
    match built {
        Ok(bin) => Some(bin.clone()),
        Err(reason) => {
            super::grpcio::skip(COMPONENT, reason);
            None
        }
    }
}

/// One grpc-go connection to a socket.
pub struct GoClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl GoClient {
    /// Dial `socket` (grpc-go blocks until the connection is up, at most 10 s).
    pub fn connect(bin: &Path, socket: &Path) -> Self {
        let mut child = Command::new(bin)
            .arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the grpc-go client");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// Call `path` with `req`; the response, or the gRPC code of the error.
    pub fn call<R: Message + Default>(&mut self, path: &str, req: &impl Message) -> Result<R, i32> {
        writeln!(self.stdin, "{path} {}", hex(&req.encode_to_vec())).unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).unwrap();
        assert!(n > 0, "the grpc-go client ended before answering {path}");
        let (code, body) = line
            .trim_end()
            .split_once(' ')
            .unwrap_or((line.trim_end(), ""));
        match code.parse::<i32>().unwrap() {
            0 => Ok(R::decode(unhex(body).as_slice()).expect("decode the response")),
            code => Err(code),
        }
    }
}

impl Drop for GoClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn labels() -> ObjectMetadata {
    ObjectMetadata {
        labels: [(
            "iri-conformance.irikit.dev/run-id".to_owned(),
            "go-grpc".to_owned(),
        )]
        .into(),
        ..Default::default()
    }
}

const UNKNOWN_ID: &str = "c0ffee000000000000000000000000000000000000000000000000000000000";

/// Create one object, find it in the full list, delete it, then delete an unknown id and expect
/// NOT_FOUND. `p` is the service's method prefix, `kind` the object kind in the method names.
#[allow(clippy::too_many_arguments)]
fn create_list_delete<CreateResp, ListReq, ListResp, DeleteReq>(
    c: &mut GoClient,
    p: &str,
    kind: &str,
    create: &impl Message,
    created_id: impl Fn(CreateResp) -> String,
    listed_ids: impl Fn(ListResp) -> Vec<String>,
    delete: impl Fn(String) -> DeleteReq,
) where
    CreateResp: Message + Default,
    ListReq: Message + Default,
    ListResp: Message + Default,
    DeleteReq: Message,
{
    let created: CreateResp = c
        .call(&format!("{p}Create{kind}"), create)
        .unwrap_or_else(|code| panic!("Create{kind}: code {code}"));
    let id = created_id(created);
    let listed: ListResp = c
        .call(&format!("{p}List{kind}s"), &ListReq::default())
        .unwrap_or_else(|code| panic!("List{kind}s: code {code}"));
    assert!(
        listed_ids(listed).contains(&id),
        "created {kind} not listed"
    );
    // Every Delete*Response is empty: decode it as `()`'s stand-in.
    c.call::<()>(&format!("{p}Delete{kind}"), &delete(id))
        .unwrap_or_else(|code| panic!("Delete{kind}: code {code}"));
    let unknown = c.call::<()>(&format!("{p}Delete{kind}"), &delete(UNKNOWN_ID.into()));
    assert_eq!(unknown.err(), Some(NOT_FOUND), "Delete{kind}(unknown)");
}

fn id_of(meta: Option<ObjectMetadata>) -> String {
    meta.unwrap().id
}

/// Version, Status (ListBucketClasses), Create, List, Delete and
/// Delete of an unknown id (NOT_FOUND) of `service` (`machine`, `volume`, `bucket`) on
/// `socket`; panics on the first unexpected answer.
pub fn assert_serves(bin: &Path, socket: &Path, service: &str) {
    let mut c = GoClient::connect(bin, socket);
    match service {
        "machine" => {
            let p = "/machine.v1alpha1.MachineRuntime/";
            let v: machine::VersionResponse = c
                .call(
                    &format!("{p}Version"),
                    &machine::VersionRequest {
                        version: "0.1.0".into(),
                    },
                )
                .expect("Version");
            assert!(!v.runtime_name.is_empty());
            let st: machine::StatusResponse = c
                .call(&format!("{p}Status"), &machine::StatusRequest {})
                .expect("Status");
            let class = st.machine_class_status[0]
                .machine_class
                .clone()
                .unwrap()
                .name;
            let m = machine::Machine {
                metadata: Some(labels()),
                spec: Some(machine::MachineSpec {
                    power: machine::Power::On as i32,
                    class,
                    ..Default::default()
                }),
                ..Default::default()
            };
            create_list_delete::<_, machine::ListMachinesRequest, _, _>(
                &mut c,
                p,
                "Machine",
                &machine::CreateMachineRequest { machine: Some(m) },
                |r: machine::CreateMachineResponse| id_of(r.machine.unwrap().metadata),
                |r: machine::ListMachinesResponse| {
                    r.machines.into_iter().map(|m| id_of(m.metadata)).collect()
                },
                |machine_id| machine::DeleteMachineRequest { machine_id },
            );
        }
        "volume" => {
            let p = "/volume.v1alpha1.VolumeRuntime/";
            let v: volume::VersionResponse = c
                .call(
                    &format!("{p}Version"),
                    &volume::VersionRequest {
                        version: "0.1.0".into(),
                    },
                )
                .expect("Version");
            assert!(!v.runtime_name.is_empty());
            let st: volume::StatusResponse = c
                .call(&format!("{p}Status"), &volume::StatusRequest {})
                .expect("Status");
            let class = st.volume_class_status[0].volume_class.clone().unwrap().name;
            let vol = volume::Volume {
                metadata: Some(labels()),
                spec: Some(volume::VolumeSpec {
                    class,
                    resources: Some(volume::VolumeResources {
                        storage_bytes: 1 << 20,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            create_list_delete::<_, volume::ListVolumesRequest, _, _>(
                &mut c,
                p,
                "Volume",
                &volume::CreateVolumeRequest { volume: Some(vol) },
                |r: volume::CreateVolumeResponse| id_of(r.volume.unwrap().metadata),
                |r: volume::ListVolumesResponse| {
                    r.volumes.into_iter().map(|v| id_of(v.metadata)).collect()
                },
                |volume_id| volume::DeleteVolumeRequest { volume_id },
            );
        }
        "bucket" => {
            let p = "/bucket.v1alpha1.BucketRuntime/";
            let classes: bucket::ListBucketClassesResponse = c
                .call(
                    &format!("{p}ListBucketClasses"),
                    &bucket::ListBucketClassesRequest {},
                )
                .expect("ListBucketClasses");
            let b = bucket::Bucket {
                metadata: Some(labels()),
                spec: Some(bucket::BucketSpec {
                    class: classes.bucket_classes[0].name.clone(),
                }),
                ..Default::default()
            };
            create_list_delete::<_, bucket::ListBucketsRequest, _, _>(
                &mut c,
                p,
                "Bucket",
                &bucket::CreateBucketRequest { bucket: Some(b) },
                |r: bucket::CreateBucketResponse| id_of(r.bucket.unwrap().metadata),
                |r: bucket::ListBucketsResponse| {
                    r.buckets.into_iter().map(|b| id_of(b.metadata)).collect()
                },
                |bucket_id| bucket::DeleteBucketRequest { bucket_id },
            );
        }
        other => panic!("unknown service {other}"),
    }
}
