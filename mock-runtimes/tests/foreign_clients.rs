//! gRPC client stacks of other languages against the `iri-mock-runtime` binary (issue 13): a
//! stock Python grpcio (≥ 1.57, default options, so the percent-encoded socket path as
//! `:authority`; and the raw path, as grpc-java sends it) and Debian's grpc-go 1.33.3 (the raw
//! path, through a custom dialer). Every service answers; with the `strict-authority` mutant
//! every call is reset.
#![allow(clippy::unwrap_used)]

#[path = "../../iri-spec/clients/grpc_go.rs"]
mod grpc_go;
#[path = "../../iri-spec/clients/grpcio.rs"]
mod grpcio;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, extra: &[&str]) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_iri-mock-runtime"))
        .arg("--machine-socket")
        .arg(dir.join("m.sock"))
        .arg("--volume-socket")
        .arg(dir.join("v.sock"))
        .arg("--bucket-socket")
        .arg(dir.join("b.sock"))
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for s in ["m.sock", "v.sock", "b.sock"] {
        while std::os::unix::net::UnixStream::connect(dir.join(s)).is_err() {
            assert!(Instant::now() < deadline, "{s} did not accept");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Server(child)
}

/// The mock's three sockets in `dir`, with the service each serves.
const SERVICES: [(&str, &str); 3] = [
    ("m.sock", "machine"),
    ("v.sock", "volume"),
    ("b.sock", "bucket"),
];

#[test]
fn python_grpcio_calls_every_service_of_the_mock() {
    if !grpcio::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _server = start(dir.path(), &[]);
    for (sock, service) in SERVICES {
        grpcio::assert_serves(env!("CARGO_MANIFEST_DIR"), &dir.path().join(sock), service);
    }
}

#[test]
fn python_grpcio_is_locked_out_by_the_strict_authority_mutant() {
    if !grpcio::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _server = start(dir.path(), &["--mutant", "strict-authority"]);
    for raw in [false, true] {
        let (ok, out) = grpcio::run(
            env!("CARGO_MANIFEST_DIR"),
            &dir.path().join("m.sock"),
            "machine",
            raw,
        );
        assert!(
            !ok,
            "strict h2 should reset the call (raw path: {raw}):\n{out}"
        );
        assert!(out.contains("RST_STREAM"), "{out}");
    }
}

#[test]
fn grpc_go_calls_every_service_of_the_mock() {
    let Some(bin) = grpc_go::available(env!("CARGO_MANIFEST_DIR")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _server = start(dir.path(), &[]);
    for (sock, service) in SERVICES {
        grpc_go::assert_serves(&bin, &dir.path().join(sock), service);
    }
}

#[test]
fn grpc_go_is_locked_out_by_the_strict_authority_mutant() {
    let Some(bin) = grpc_go::available(env!("CARGO_MANIFEST_DIR")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _server = start(dir.path(), &["--mutant", "strict-authority"]);
    let mut client = grpc_go::GoClient::connect(&bin, &dir.path().join("m.sock"));
    let answer = client.call::<iri_spec::machine::v1alpha1::VersionResponse>(
        "/machine.v1alpha1.MachineRuntime/Version",
        &iri_spec::machine::v1alpha1::VersionRequest::default(),
    );
    // h2 resets the stream (PROTOCOL_ERROR), which grpc-go reports as INTERNAL.
    assert_eq!(
        answer.err(),
        Some(13),
        "strict h2 should reset grpc-go's call"
    );
}
