//! What irictl's tests share: the standalone `iri-mock-runtime` binary they run irictl against.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The `iri-mock-runtime` binary in this test's target dir. `cargo test --workspace` builds it;
/// `cargo test -p irictl` does not build another package's binaries, so it is built
/// here when missing or older than the sources of iri-mock and iri-spec.
pub fn mock_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/irictl-<hash> -> target/<profile>/
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let binary = profile_dir.join("iri-mock-runtime");
        let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let sources = newest_mtime(&workspace.join("mock-runtimes/src"))
            .max(newest_mtime(&workspace.join("iri-spec/src")));
        let stale = built.is_none_or(|built| sources.is_some_and(|sources| sources > built));
        if stale {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "--quiet",
                "-p",
                "iri-mock",
                "--bin",
                "iri-mock-runtime",
            ]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build for iri-mock-runtime");
            assert!(
                status.success(),
                "cargo build -p iri-mock --bin iri-mock-runtime failed"
            );
        }
        assert!(binary.exists(), "{} is missing", binary.display());
        binary
    })
}

/// The newest modification time of the files under `dir`.
fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(time);
    }
    newest
}
