//! Helpers shared by the poollet integration tests: waiting on the store's watch (no polling,
//! no sleeps) with a deadline, and the etcd switch.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use irikit_api::{Kind, Resource, Store, StoreExt};

/// An in-process `iri-mock` with runtime name `iri-mock`.
pub(crate) async fn mock() -> iri_mock::MockRuntime {
    iri_mock::MockRuntime::builder()
        .runtime_name("iri-mock")
        .start_in_process()
        .await
        .unwrap()
}

/// `builder`'s mock on a unix socket in a temporary directory, with its endpoint.
pub(crate) async fn unix_mock(
    builder: iri_mock::MockRuntimeBuilder,
) -> (iri_mock::MockRuntime, String) {
    let mock = builder.start_unix_temp().await.unwrap();
    let endpoint = mock.endpoint().unwrap().to_string();
    (mock, endpoint)
}

/// A MachineClass `name` with `cpu` and `memory` capabilities.
pub(crate) fn machine_class(
    name: &str,
    cpu: &str,
    memory: &str,
) -> irikit_api::compute::MachineClass {
    irikit_api::compute::MachineClass {
        metadata: irikit_api::meta::ObjectMeta::named(name),
        capabilities: resources(&[("cpu", cpu), ("memory", memory)]),
        ..irikit_api::compute::MachineClass::default()
    }
}

/// A resource list of `(name, quantity)` pairs.
pub(crate) fn resources(pairs: &[(&str, &str)]) -> irikit_api::ResourceList {
    pairs
        .iter()
        .map(|(name, quantity)| ((*name).to_owned(), quantity.parse().unwrap()))
        .collect()
}

/// Creates `m` on the mock's machine runtime; returns its id.
pub(crate) async fn create_on_runtime(
    mock: &iri_mock::MockRuntime,
    m: iri_spec::machine::v1alpha1::Machine,
) -> String {
    use iri_spec::machine::v1alpha1::{
        CreateMachineRequest, machine_runtime_client::MachineRuntimeClient,
    };
    MachineRuntimeClient::new(mock.machine_channel())
        .create_machine(CreateMachineRequest { machine: Some(m) })
        .await
        .unwrap()
        .into_inner()
        .machine
        .unwrap()
        .metadata
        .unwrap()
        .id
}

/// A poollet running on a spawned task until [`Env::stop`], with its store and runtime.
pub(crate) struct Env {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) mock: iri_mock::MockRuntime,
    pub(crate) token: tokio_util::sync::CancellationToken,
    pub(crate) task: tokio::task::JoinHandle<poollet::Result<()>>,
}

impl Env {
    /// Spawns `run` (a poollet's `run`) with a fresh cancellation token.
    pub(crate) fn spawn<F>(
        store: Arc<dyn Store>,
        mock: iri_mock::MockRuntime,
        run: impl FnOnce(tokio_util::sync::CancellationToken) -> F,
    ) -> Self
    where
        F: std::future::Future<Output = poollet::Result<()>> + Send + 'static,
    {
        let token = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(run(token.clone()));
        Self {
            store,
            mock,
            token,
            task,
        }
    }

    /// Creates `obj` in the store and waits until `pred` holds for it.
    pub(crate) async fn create_and_wait<R: Resource>(
        &self,
        obj: R,
        pred: impl Fn(&R) -> bool,
        what: &str,
    ) -> R {
        let (namespace, name) = (obj.meta().namespace.clone(), obj.meta().name.clone());
        self.store.create_typed(obj).await.unwrap();
        wait_for(&self.store, &namespace, &name, pred, what).await
    }

    /// Cancels the poollet, asserts that it stops cleanly, and hands back store and runtime.
    pub(crate) async fn stop(self) -> (Arc<dyn Store>, iri_mock::MockRuntime) {
        self.token.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("poollet stops after cancel")
            .unwrap()
            .unwrap();
        (self.store, self.mock)
    }
}

/// Defines the test `$memory`, which runs `$run(store)` on a fresh memory store, and the test
/// `$etcd`, which runs it on a fresh local etcd under `$prefix` (one `skip:` line when etcd is
/// missing and not required).
#[allow(unused_macros)]
macro_rules! memory_and_etcd {
    ($memory:ident, $etcd:ident, $prefix:literal, $run:path) => {
        #[tokio::test]
        async fn $memory() {
            $run(std::sync::Arc::new(
                irikit_api::store::memory::MemoryStore::new(),
            ))
            .await;
        }

        #[cfg(feature = "etcd")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $etcd() {
            let Some((_etcd, store)) = common::etcd_store($prefix).await else {
                return;
            };
            $run(store).await;
        }

        #[cfg(not(feature = "etcd"))]
        #[test]
        fn $etcd() {
            common::etcd_unavailable();
        }
    };
}
#[allow(unused_imports)]
pub(crate) use memory_and_etcd;

/// How long any wait may take before the test fails.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// Waits until `pred` holds for the object `namespace/name`.
pub(crate) async fn wait_for<R: Resource>(
    store: &Arc<dyn Store>,
    namespace: &str,
    name: &str,
    pred: impl Fn(&R) -> bool,
    what: &str,
) -> R {
    wait_any(
        store,
        |obj: &R| obj.meta().namespace == namespace && obj.meta().name == name && pred(obj),
        what,
    )
    .await
}

/// Waits until some object of kind `R` satisfies `pred` and returns it.
pub(crate) async fn wait_any<R: Resource>(
    store: &Arc<dyn Store>,
    pred: impl Fn(&R) -> bool,
    what: &str,
) -> R {
    let check = async {
        let revision = store.revision().await.unwrap();
        let (existing, _) = store
            .list_typed::<R>(&irikit_api::ListOptions::all())
            .await
            .unwrap();
        if let Some(obj) = existing.into_iter().find(|o| pred(o)) {
            return obj;
        }
        let mut stream = store.watch(Some(R::KIND), revision).await.unwrap();
        while let Some(event) = stream.next().await {
            let event = event.unwrap();
            if event.type_ == irikit_api::store::EventType::Deleted {
                continue;
            }
            let obj = R::from_object(event.object).unwrap();
            if pred(&obj) {
                return obj;
            }
        }
        panic!("watch ended while waiting for {what}");
    };
    tokio::time::timeout(WAIT, check)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Waits until the object is gone.
pub(crate) async fn wait_gone(store: &Arc<dyn Store>, kind: Kind, namespace: &str, name: &str) {
    let check = async {
        let revision = store.revision().await.unwrap();
        if store.get(kind, namespace, name).await.is_err() {
            return;
        }
        let mut stream = store.watch(Some(kind), revision).await.unwrap();
        while let Some(event) = stream.next().await {
            let event = event.unwrap();
            let meta = event.object.metadata();
            if meta.namespace == namespace
                && meta.name == name
                && event.type_ == irikit_api::store::EventType::Deleted
            {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, check)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {namespace}/{name} to go"));
}

/// Polls `cond` every 10 ms until it holds (runtime-side state that no store event
/// announces), failing after [`WAIT`].
pub(crate) async fn poll_until(cond: impl Fn() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The bytes under `key` in secret data sent over the IRI.
pub(crate) fn secret_bytes<'a>(
    data: &'a std::collections::HashMap<String, Vec<u8>>,
    key: &str,
) -> Option<&'a [u8]> {
    data.get(key).map(Vec::as_slice)
}

/// A Secret `default/<name>` with one base64 `data` key.
pub(crate) fn secret(name: &str, key: &str, value: &[u8]) -> irikit_api::core::Secret {
    use base64::Engine;
    let mut s = irikit_api::core::Secret {
        metadata: irikit_api::meta::ObjectMeta::namespaced("default", name),
        ..irikit_api::core::Secret::default()
    };
    s.data.insert(
        key.into(),
        base64::engine::general_purpose::STANDARD.encode(value),
    );
    s
}

/// Stderr lines of a child process.
pub(crate) type StderrLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>;

/// Spawns `cmd` (a poollet binary) with `RUST_LOG=info` and its stderr piped.
pub(crate) fn spawn_logging(
    mut cmd: tokio::process::Command,
) -> (tokio::process::Child, StderrLines) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, lines)
}

/// The next stderr line that contains `needle`; `None` when the stream ends first.
pub(crate) async fn line_with(lines: &mut StderrLines, needle: &str) -> Option<String> {
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains(needle) {
            return Some(line);
        }
    }
    None
}

/// Runs `bin` against an iri-mock on a unix socket (`args`, then `endpoint_flag` with the
/// mock's endpoint) until its stderr shows `started_line`, then sends SIGTERM and asserts a
/// graceful, successful exit.
pub(crate) async fn run_against_unix_mock(
    bin: &str,
    args: &[&str],
    endpoint_flag: &str,
    started_line: &str,
) {
    let (_mock, endpoint) =
        unix_mock(iri_mock::MockRuntime::builder().runtime_name("iri-mock")).await;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args).args([endpoint_flag, &endpoint]);
    run_until_line_then_sigterm(cmd, started_line).await;
}

/// Runs `cmd` (a poollet binary) until its stderr shows `started_line`, then sends SIGTERM
/// and asserts a graceful, successful exit.
pub(crate) async fn run_until_line_then_sigterm(cmd: tokio::process::Command, started_line: &str) {
    let (mut child, mut lines) = spawn_logging(cmd);
    let started = tokio::time::timeout(WAIT, line_with(&mut lines, started_line))
        .await
        .ok()
        .flatten()
        .is_some();
    assert!(started, "the poollet logged {started_line:?}");
    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "graceful exit: {status}");
    drain.await.ok();
}

/// A store in a fresh local etcd under `prefix`, or `None` (after one `skip:` line) when etcd
/// is not installed and `IRIKIT_REQUIRE` does not name it.
#[cfg(feature = "etcd")]
pub(crate) async fn etcd_store(
    prefix: &str,
) -> Option<(irikit_api::store::etcd::LocalEtcd, Arc<dyn Store>)> {
    use irikit_api::store::etcd::LocalEtcd;
    if LocalEtcd::binary().is_none() {
        skip_etcd("not on PATH", "etcd not on PATH (install etcd-server)");
        return None;
    }
    let etcd = LocalEtcd::start(None).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(etcd.store(prefix).await.unwrap());
    Some((etcd, store))
}

/// Without the `etcd` feature: fails when `IRIKIT_REQUIRE` names etcd, else one `skip:` line.
#[cfg(not(feature = "etcd"))]
pub(crate) fn etcd_unavailable() {
    skip_etcd(
        "poollet was built without the `etcd` feature",
        "poollet built without the `etcd` feature",
    );
}

/// Fails (etcd is required, `but`) when `IRIKIT_REQUIRE` names etcd, else one `skip:` line.
fn skip_etcd(but: &str, skip: &str) {
    assert!(
        !etcd_required(),
        "etcd is required (IRIKIT_REQUIRE) but {but}"
    );
    let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("skip: {skip}\n"));
}

/// Whether `IRIKIT_REQUIRE` names etcd.
pub(crate) fn etcd_required() -> bool {
    std::env::var("IRIKIT_REQUIRE")
        .unwrap_or_default()
        .split(',')
        .any(|c| c.trim() == "etcd")
}

/// A binary of this workspace, `package`'s `bin` with `features`, built next to this test's
/// target directory with cargo when missing or stale (`env_override` names a variable that
/// points at a prebuilt one instead).
pub(crate) fn workspace_bin(
    package: &str,
    bin: &str,
    features: &[&str],
    env_override: &str,
) -> std::path::PathBuf {
    use std::path::Path;
    if let Some(path) = std::env::var_os(env_override) {
        return path.into();
    }
    // target/<profile>/deps/<test>-<hash> → target/<profile>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    let mut build = std::process::Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .env("CARGO_TARGET_DIR", target_dir);
    if !features.is_empty() {
        build.args(["--features", &features.join(",")]);
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("run cargo to build {bin}: {e}"));
    assert!(status.success(), "building {bin} failed");
    profile_dir.join(bin)
}
