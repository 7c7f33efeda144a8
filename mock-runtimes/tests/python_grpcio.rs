//! A stock Python grpcio client (≥ 1.57, default options, so the percent-encoded socket path as
//! `:authority`; and the raw path, as grpc-java sends it) against the `iri-mock-runtime` binary:
//! every service answers; with the `strict-authority` mutant every call is reset (issue 13).
#![allow(clippy::unwrap_used)]

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

#[test]
fn python_grpcio_calls_every_service_of_the_mock() {
    if !grpcio::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _server = start(dir.path(), &[]);
    for (sock, service) in [
        ("m.sock", "machine"),
        ("v.sock", "volume"),
        ("b.sock", "bucket"),
    ] {
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
