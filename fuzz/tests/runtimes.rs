//! A seeded fuzz run against every irikit runtime server, as child processes on unix sockets
//! in a temp dir: `iri-mock-runtime` (machine, volume, bucket), `ch-machine-runtime` on
//! `ch-sim`, and `file-volume-runtime`. Each must answer every input without a finding (no
//! `Unknown`/`Internal` for bad input, no hang, no crash), and nothing outside the runtimes'
//! configured roots may change: a canary tree beside them is compared before and after.
//!
//! `IRIKIT_FUZZ_INPUTS` sets the inputs per server (default 1,500: CI's count);
//! `IRIKIT_FUZZ_SEED` the seed (default 1).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use iri_fuzz::{Config, Report, Service};
use iri_spec::endpoint::Endpoint;

/// A binary of this workspace, built next to this test's target directory with cargo.
fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .env("CARGO_TARGET_DIR", target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    assert!(build.status().unwrap().success(), "building {bin} failed");
    profile_dir.join(bin)
}

/// A runtime process, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> Server {
    let log = std::fs::File::create(log).unwrap();
    Server(
        Command::new(bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

async fn channel(socket: &Path) -> tonic::transport::Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if socket.exists()
            && let Ok(channel) =
                iri_spec::endpoint::connect(&Endpoint::Unix(socket.to_path_buf())).await
        {
            return channel;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not come up",
            socket.display()
        );
        // Polling a child process's socket; there is no event to wait on.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every file below `dir` with its size and modification time, leaving out `skip`.
fn tree(dir: &Path, skip: &[&Path]) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if skip.iter().any(|s| path.starts_with(s)) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.insert(path, (meta.len(), meta.modified().unwrap()));
        }
    }
    out
}

fn config() -> Config {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Config {
        inputs: env("IRIKIT_FUZZ_INPUTS", 1_500),
        seed: env("IRIKIT_FUZZ_SEED", 1),
        deadline: Duration::from_secs(20),
        garbage_share: 0.3,
    }
}

fn check(report: &Report, name: &str) {
    println!(
        "fuzz {name} {:?}: {} inputs ({} garbage), {:.0} inputs/s, answers {:?}",
        report.service, report.inputs, report.garbage, report.inputs_per_second, report.codes
    );
    assert!(
        report.findings.is_empty(),
        "{name} {:?}: findings {:#?}",
        report.service,
        report.findings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_runtime_survives_the_fuzzer_and_stays_in_its_roots() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    // A canary tree beside the roots: nothing may touch it.
    let canary = base.join("canary");
    std::fs::create_dir_all(canary.join("etc")).unwrap();
    std::fs::write(canary.join("etc/passwd"), "root:x:0:0\n").unwrap();
    std::fs::write(canary.join("secret"), "do not read").unwrap();
    let roots: Vec<PathBuf> = ["mock", "fv", "ch"].iter().map(|r| base.join(r)).collect();
    for root in &roots {
        std::fs::create_dir_all(root).unwrap();
    }
    let logs = base.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let skip: Vec<&Path> = roots
        .iter()
        .map(PathBuf::as_path)
        .chain([logs.as_path()])
        .collect();
    let before = tree(base, &skip);
    let config = config();

    // iri-mock-runtime: all three services.
    {
        let bin = workspace_bin("iri-mock", "iri-mock-runtime");
        let sockets = ["m.sock", "v.sock", "b.sock"].map(|s| roots[0].join(s));
        let _server = spawn(
            &bin,
            &[
                "--machine-socket".into(),
                sockets[0].display().to_string(),
                "--volume-socket".into(),
                sockets[1].display().to_string(),
                "--bucket-socket".into(),
                sockets[2].display().to_string(),
            ],
            &logs.join("mock.log"),
        );
        for (socket, service) in
            sockets
                .iter()
                .zip([Service::Machine, Service::Volume, Service::Bucket])
        {
            let report = iri_fuzz::run(&channel(socket).await, service, &config).await;
            check(&report, "iri-mock-runtime");
        }
    }

    // file-volume-runtime: raw and qcow2 classes.
    {
        let bin = workspace_bin("file-volume-runtime", "file-volume-runtime");
        let root = &roots[1];
        std::fs::create_dir_all(root.join("images")).unwrap();
        let socket = root.join("fv.sock");
        let _server = spawn(
            &bin,
            &[
                "--socket".into(),
                socket.display().to_string(),
                "--root".into(),
                root.join("data").display().to_string(),
                "--image-dir".into(),
                root.join("images").display().to_string(),
                "--volume-class".into(),
                "raw,1000,100;qcow2,500,50,qcow2".into(),
            ],
            &logs.join("fv.log"),
        );
        let report = iri_fuzz::run(&channel(&socket).await, Service::Volume, &config).await;
        check(&report, "file-volume-runtime");
    }

    // ch-machine-runtime on ch-sim.
    {
        let bin = workspace_bin("ch-machine-runtime", "ch-machine-runtime");
        let sim = workspace_bin("ch-machine-runtime", "ch-sim");
        let root = &roots[2];
        for d in ["state", "volumes", "images"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let kernel = root.join("kernel");
        std::fs::write(&kernel, b"not an ELF: ch-sim only opens it").unwrap();
        let socket = root.join("ch.sock");
        let _server = spawn(
            &bin,
            &[
                "--socket".into(),
                socket.display().to_string(),
                "--state-dir".into(),
                root.join("state").display().to_string(),
                "--ch-binary".into(),
                sim.display().to_string(),
                "--kernel".into(),
                kernel.display().to_string(),
                "--machine-class".into(),
                "small,1,134217728".into(),
                "--machine-class".into(),
                "large,2,268435456".into(),
                "--volume-dir".into(),
                root.join("volumes").display().to_string(),
                "--image-dir".into(),
                root.join("images").display().to_string(),
                "--resync-interval".into(),
                "200ms".into(),
            ],
            &logs.join("ch.log"),
        );
        let report = iri_fuzz::run(&channel(&socket).await, Service::Machine, &config).await;
        check(&report, "ch-machine-runtime (ch-sim)");
    }

    let after = tree(base, &skip);
    assert_eq!(
        before, after,
        "files outside the runtimes' roots were created, changed or removed"
    );
}
