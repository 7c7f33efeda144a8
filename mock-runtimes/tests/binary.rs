//! The `iri-mock-runtime` binary: serves on temp unix sockets, answers health and reflection
//! (listed by a Rust reflection client), applies flags, and exits cleanly on SIGTERM removing
//! its sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use common::class_resources;
use iri_spec::{endpoint::Endpoint, machine::v1alpha1 as machine, volume::v1alpha1 as volume};
use tokio::process::{Child, Command};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

const BIN: &str = env!("CARGO_BIN_EXE_iri-mock-runtime");

struct Server {
    child: Child,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("--machine-socket")
            .arg(dir.path().join("machine.sock"))
            .arg("--volume-socket")
            .arg(format!(
                "unix://{}",
                dir.path().join("volume.sock").display()
            ))
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = cmd.spawn().unwrap();
        let server = Server { child, dir };
        for _ in 0..500 {
            if server.path("machine.sock").exists() && server.path("volume.sock").exists() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("iri-mock-runtime did not create its sockets");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn channel(&self, name: &str) -> tonic::transport::Channel {
        // A socket file exists from bind() on, a moment before listen(): retry a refused connect.
        let endpoint = Endpoint::Unix(self.path(name));
        for _ in 0..500 {
            if let Ok(channel) = iri_spec::endpoint::connect(&endpoint).await {
                return channel;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        iri_spec::endpoint::connect(&endpoint).await.unwrap()
    }

    async fn sigterm(mut self) -> (std::process::ExitStatus, tempfile::TempDir) {
        let pid = self.child.id().unwrap();
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await
            .unwrap();
        assert!(status.success());
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        (status, self.dir)
    }
}

async fn list_services(channel: tonic::transport::Channel) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

#[tokio::test]
async fn reflection_health_rpc_and_sigterm() {
    let server = Server::start(&["--machine-class", "tiny:cpu=1,memory=512Mi,quantity=7"]).await;
    assert_eq!(
        list_services(server.channel("machine.sock").await).await,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "irikit.reservation.v1alpha1.ReservationRuntime",
            "machine.v1alpha1.MachineRuntime",
        ]
    );
    // irikit's reservation extension answers on the machine socket, against the class list.
    let mut rsv =
        iri_spec::reservation::ReservationClient::new(server.channel("machine.sock").await);
    let spec = |n: i64| iri_spec::irikit::reservation::v1alpha1::Reservation {
        spec: Some(iri_spec::irikit::reservation::v1alpha1::ReservationSpec {
            machine_classes: [("tiny".to_owned(), n)].into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let state = |r: iri_spec::irikit::reservation::v1alpha1::Reservation| r.status.unwrap().state;
    let fits = rsv.create(spec(7)).await.unwrap().served().unwrap();
    assert_eq!(state(fits.clone()), 1, "7 of 7 tiny machines: ACCEPTED");
    let over = rsv.create(spec(1)).await.unwrap().served().unwrap();
    assert_eq!(state(over), 2, "the 8th tiny machine: REJECTED");
    assert_eq!(rsv.list(None).await.unwrap().len(), 2);
    assert!(
        list_services(server.channel("volume.sock").await)
            .await
            .contains(&"volume.v1alpha1.VolumeRuntime".to_owned())
    );

    let mut health =
        tonic_health::pb::health_client::HealthClient::new(server.channel("machine.sock").await);
    for service in ["", "machine.v1alpha1.MachineRuntime"] {
        let res = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            res.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }

    let mut m = machine::machine_runtime_client::MachineRuntimeClient::new(
        server.channel("machine.sock").await,
    );
    let status = m
        .status(machine::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let class = &status.machine_class_status[0];
    assert_eq!(class.machine_class.as_ref().unwrap().name, "tiny");
    assert_eq!(class.quantity, 7);
    assert_eq!(class_resources(class)["memory"], 512 << 20);
    let mut v = volume::volume_runtime_client::VolumeRuntimeClient::new(
        server.channel("volume.sock").await,
    );
    assert_eq!(
        v.version(volume::VersionRequest::default())
            .await
            .unwrap()
            .into_inner()
            .runtime_name,
        "iri-mock"
    );

    let (status, dir) = server.sigterm().await;
    assert!(status.success(), "{status:?}");
    assert!(!dir.path().join("machine.sock").exists());
    assert!(!dir.path().join("volume.sock").exists());
}

#[tokio::test]
async fn mutants_faults_and_class_file_from_flags() {
    let dir = tempfile::tempdir().unwrap();
    let classes = dir.path().join("classes.yaml");
    std::fs::write(
        &classes,
        "kind: MachineClass\nmetadata: {name: from-file}\ncapabilities: {cpu: 2, memory: 4Gi}\n",
    )
    .unwrap();
    let server = Server::start(&[
        "--classes",
        classes.to_str().unwrap(),
        "--mutant",
        "version-empty",
        "--fault",
        "Exec:always:error=unavailable,try later",
    ])
    .await;
    let mut m = machine::machine_runtime_client::MachineRuntimeClient::new(
        server.channel("machine.sock").await,
    );
    assert_eq!(
        m.version(machine::VersionRequest::default())
            .await
            .unwrap()
            .into_inner()
            .runtime_name,
        ""
    );
    let status = m
        .status(machine::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.machine_class_status[0]
            .machine_class
            .as_ref()
            .unwrap()
            .name,
        "from-file"
    );
    let err = m
        .exec(machine::ExecRequest {
            machine_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::Unavailable, "try later")
    );
    let (status, _dir) = server.sigterm().await;
    assert!(status.success());
}

fn run_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn bad_input_gives_an_error_and_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("x.sock");
    let sock = sock.to_str().unwrap();
    let missing_dir = dir.path().join("missing/x.sock");
    let missing_yaml = dir.path().join("missing.yaml");
    for args in [
        &[][..],
        &["--machine-socket", sock, "--mutant", "no-such-mutant"],
        &["--machine-socket", missing_dir.to_str().unwrap()],
        &["--machine-socket", sock, "--machine-class", "broken"],
        &[
            "--machine-socket",
            sock,
            "--classes",
            missing_yaml.to_str().unwrap(),
        ],
        &["--machine-socket", sock, "--fault", "Exec:sometimes:hang"],
        &["--machine-socket", sock, "--provision-delay", "soon"],
    ] {
        let out = run_cli(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.trim().is_empty(), "{args:?}: no message");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert!(!Path::new(sock).exists());
}

#[test]
fn lists_mutants() {
    let out = run_cli(&["--list-mutants"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), iri_mock::Mutant::ALL.len());
    assert!(text.contains("delete-unknown-ok"));
}

#[test]
fn help_snapshot() {
    let out = run_cli(&["--help"]);
    assert!(out.status.success());
    insta::assert_snapshot!("help", String::from_utf8(out.stdout).unwrap());
}
