//! Runs `iri-spec/clients/grpcio_client.py` (a stock Python grpcio client, stubs generated
//! from `iri-spec/proto` at run time) against a runtime socket. Included by path by the serving
//! tests of every runtime binary; the component name in `IRIKIT_REQUIRE` is `python-grpcio`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The `IRIKIT_REQUIRE` name of this client stack.
pub const COMPONENT: &str = "python-grpcio";

/// The checkout's root (the directory holding `iri-spec/`), found upwards from `manifest_dir`.
fn root(manifest_dir: &str) -> PathBuf {
    let mut dir = PathBuf::from(manifest_dir);
    while !dir.join("iri-spec/clients/grpcio_client.py").is_file() {
        assert!(dir.pop(), "iri-spec/clients not found above {manifest_dir}");
    }
    dir
}

/// Whether `python3` with `grpc` (≥ 1.57, the first to send the percent-encoded socket path)
/// and `grpc_tools` is there; otherwise one `skip:` line, or a failure when required.
pub fn available() -> bool {
    let out = Command::new("python3")
        .args([
            "-c",
            "import grpc, grpc_tools; v = tuple(int(x) for x in grpc.__version__.split('.')[:2]); \
             assert v >= (1, 57), grpc.__version__; print(grpc.__version__)",
        ])
        .output();
    let reason = match out {
        Ok(o) if o.status.success() => return true,
        Ok(o) => format!(
            "python3 lacks grpcio >= 1.57 or grpcio-tools (pip install grpcio grpcio-tools): {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => format!("python3 not runnable: {e}"),
    };
    skip(COMPONENT, &reason);
    false
}

/// One `skip:` line for a missing client stack, or a failure when `IRIKIT_REQUIRE` names
/// `component` (shared with the other stacks' helpers in this directory).
pub fn skip(component: &str, reason: &str) {
    let required = std::env::var("IRIKIT_REQUIRE")
        .unwrap_or_default()
        .split(',')
        .any(|c| c.trim() == component);
    assert!(
        !required,
        "{component} is required (IRIKIT_REQUIRE) but {reason}"
    );
    let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("skip: {reason}\n"));
}

/// Calls Version, Status (ListBucketClasses), Create, List, Delete and Delete of an unknown id
/// (NOT_FOUND) of `service` (`machine`, `volume`, `bucket`) on `socket` with grpcio's default
/// `:authority` (`raw = false`: the percent-encoded path) or the raw socket path. Returns
/// whether every call answered as expected, and the script's output.
pub fn run(manifest_dir: &str, socket: &Path, service: &str, raw: bool) -> (bool, String) {
    let root = root(manifest_dir);
    let out = Command::new("python3")
        .arg(root.join("iri-spec/clients/grpcio_client.py"))
        .arg("--socket")
        .arg(socket)
        .args(["--service", service])
        .arg("--proto")
        .arg(root.join("iri-spec/proto"))
        .args(["--authority", if raw { "raw" } else { "default" }])
        .output()
        .expect("run python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// [`run`] for both authority forms; panics with the output unless both succeed.
pub fn assert_serves(manifest_dir: &str, socket: &Path, service: &str) {
    for raw in [false, true] {
        let (ok, out) = run(manifest_dir, socket, service, raw);
        assert!(
            ok,
            "python grpcio ({service}, raw path: {raw}) failed:\n{out}"
        );
        assert!(out.contains("Delete(unknown): NOT_FOUND"), "{out}");
    }
}
