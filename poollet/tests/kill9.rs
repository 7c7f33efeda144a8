//! Acceptance: the `machinepoollet` binary is SIGKILLed 20 times during a rollout of 1,000
//! Machines and restarted each time. Real processes: `iri-mock-runtime` on a unix socket, the
//! poollet with `--store etcd://` on a throw-away etcd. At the end every Machine is Running
//! with a machineID, the runtime holds exactly one IRI machine per machine-uid, and no IRI
//! machine lacks its Machine. "0 duplicates" is checked three ways: the final listing, a
//! sampler that lists the runtime throughout the rollout, and the poollets' own logs (a
//! duplicate or orphan the poollet had to clean up is logged).
//!
//! It is an etcd component test: without etcd (or without the `etcd` feature) it prints one
//! `skip:` line, unless `IRIKIT_REQUIRE` names etcd. The `iri-mock-runtime` binary is built
//! next to this test's target directory with cargo if needed (`IRIKIT_MOCK_RUNTIME_BIN`
//! overrides it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

#[cfg(not(feature = "etcd"))]
#[test]
fn kill9_rollout() {
    common::etcd_unavailable();
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_rollout() {
    rollout::run().await;
}

#[cfg(feature = "etcd")]
mod rollout {
    use std::{
        collections::{HashMap, HashSet},
        path::PathBuf,
        process::Stdio,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::{Duration, Instant},
    };

    use futures::{StreamExt, TryStreamExt};
    use iri_spec::{
        endpoint::Endpoint,
        keys,
        machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient},
    };
    use irikit_api::{
        Kind, ListOptions, Resource, Store, StoreExt,
        compute::Machine,
        meta::{LocalObjectReference, ObjectMeta},
        store::etcd::DEFAULT_PREFIX,
    };
    use tokio::process::{Child, Command};
    use tonic::transport::Channel;

    const POOLLET: &str = env!("CARGO_BIN_EXE_machinepoollet");
    const N_MACHINES: usize = 1000;
    const N_KILLS: usize = 20;
    const POOL: &str = "pool-k9";
    const NS: &str = "default";
    const DEADLINE: Duration = Duration::from_secs(240);

    /// The `iri-mock-runtime` binary of this build (built with cargo when missing or stale).
    fn mock_runtime_bin() -> PathBuf {
        super::common::workspace_bin(
            "iri-mock",
            "iri-mock-runtime",
            &[],
            "IRIKIT_MOCK_RUNTIME_BIN",
        )
    }

    struct Poollet {
        child: Child,
        logs: tokio::task::JoinHandle<()>,
    }

    #[derive(Default)]
    struct LogCounts {
        duplicates: AtomicUsize,
        orphans: AtomicUsize,
        creates: AtomicUsize,
    }

    fn start_poollet(endpoint: &str, etcd: &str, counts: &Arc<LogCounts>) -> Poollet {
        let mut cmd = Command::new(POOLLET);
        cmd.args([
            "--machine-pool-name",
            POOL,
            "--provider-id",
            "ironcore://k9",
        ])
        .args(["--machine-runtime-endpoint", endpoint])
        .args(["--store", &format!("etcd://{etcd}")])
        .args(["--max-concurrent-reconciles", "32", "--relist-period", "1s"])
        .env("POOLLET_LOG_FORMAT", "text")
        .stdout(Stdio::null());
        let (child, mut lines) = super::common::spawn_logging(cmd);
        let counts = counts.clone();
        let logs = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("duplicate runtime machine") {
                    counts.duplicates.fetch_add(1, Ordering::Relaxed);
                    eprintln!("{line}");
                } else if line.contains("orphaned runtime machine") {
                    counts.orphans.fetch_add(1, Ordering::Relaxed);
                    eprintln!("{line}");
                } else if line.contains("machine created on the runtime") {
                    counts.creates.fetch_add(1, Ordering::Relaxed);
                } else if line.contains("ERROR") || line.starts_with("error") {
                    eprintln!("poollet: {line}");
                }
            }
        });
        Poollet { child, logs }
    }

    async fn kill9(mut poollet: Poollet) {
        // tokio's Child::kill sends SIGKILL and reaps the process.
        poollet.child.kill().await.unwrap();
        poollet.logs.await.ok();
    }

    async fn list_runtime(client: &mut MachineRuntimeClient<Channel>) -> Vec<machine::Machine> {
        client
            .list_machines(machine::ListMachinesRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .machines
    }

    fn uid_label(m: &machine::Machine) -> String {
        m.metadata
            .as_ref()
            .and_then(|md| md.labels.get(keys::MACHINE_UID_LABEL))
            .cloned()
            .unwrap_or_default()
    }

    /// The largest number of live IRI machines sharing one machine-uid.
    fn max_per_uid(machines: &[machine::Machine]) -> usize {
        let mut per_uid: HashMap<String, usize> = HashMap::new();
        for m in machines {
            if m.metadata.as_ref().is_some_and(|md| md.deleted_at == 0) {
                *per_uid.entry(uid_label(m)).or_default() += 1;
            }
        }
        per_uid.values().copied().max().unwrap_or(0)
    }

    pub(super) async fn run() {
        let Some((etcd, store)) = super::common::etcd_store(DEFAULT_PREFIX).await else {
            return;
        };
        let started = Instant::now();
        let etcd_host = etcd.endpoint().trim_start_matches("http://").to_string();

        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("machine.sock");
        let _mock = Command::new(mock_runtime_bin())
            .arg("--machine-socket")
            .arg(&socket)
            .args([
                "--machine-class",
                "k9-small:cpu=1,memory=1Gi,quantity=100000",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let endpoint = Endpoint::Unix(socket.clone());
        let mut client = None;
        let connect_deadline = Instant::now() + Duration::from_secs(20);
        while client.is_none() {
            assert!(
                Instant::now() < connect_deadline,
                "iri-mock-runtime did not start"
            );
            if socket.exists()
                && let Ok(channel) = iri_spec::endpoint::connect(&endpoint).await
            {
                client = Some(MachineRuntimeClient::new(channel));
            } else {
                // Polling a child process's socket; there is no event to wait on.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut client = client.unwrap();

        store
            .create_typed(super::common::machine_class("k9-small", "1", "1Gi"))
            .await
            .unwrap();
        let names: Vec<String> = (0..N_MACHINES).map(|i| format!("vm-{i:04}")).collect();
        futures::stream::iter(names.iter().cloned())
            .map(|name| {
                let store = store.clone();
                async move {
                    let mut m = Machine {
                        metadata: ObjectMeta::namespaced(NS, name),
                        ..Machine::default()
                    };
                    m.spec.machine_class_ref = LocalObjectReference::new("k9-small");
                    m.spec.machine_pool_ref = Some(LocalObjectReference::new(POOL));
                    store.create_typed(m).await.map(drop)
                }
            })
            .buffer_unordered(64)
            .try_collect::<Vec<()>>()
            .await
            .unwrap();
        let created_in = started.elapsed();

        // Follow the rollout through a store watch: names of Running machines.
        let revision = store.revision().await.unwrap();
        let mut watch = store.watch(Some(Kind::Machine), revision).await.unwrap();
        let running = Arc::new(std::sync::Mutex::new(HashSet::new()));
        let follower = {
            let running = running.clone();
            tokio::spawn(async move {
                while let Some(Ok(event)) = watch.next().await {
                    if let Some(m) = Machine::from_object(event.object) {
                        let mut running = running.lock().unwrap();
                        if m.status.state == "Running" && !m.status.machine_id.is_empty() {
                            running.insert(m.metadata.name);
                        } else {
                            running.remove(&m.metadata.name);
                        }
                    }
                }
            })
        };
        let n_running = || running.lock().unwrap().len();

        // Sample the runtime throughout: never two live IRI machines for one uid.
        let sampler_stop = tokio_util::sync::CancellationToken::new();
        let sampler = {
            let mut client = client.clone();
            let stop = sampler_stop.clone();
            tokio::spawn(async move {
                let mut worst = 0;
                let mut samples = 0;
                while !stop.is_cancelled() {
                    worst = worst.max(max_per_uid(&list_runtime(&mut client).await));
                    samples += 1;
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                (worst, samples)
            })
        };

        let counts = Arc::new(LogCounts::default());
        let rollout_started = Instant::now();
        // Polling a counter fed by the store watch, up to the deadline.
        let wait_running = async |target: usize, when: &str| {
            while n_running() < target {
                assert!(
                    rollout_started.elapsed() < DEADLINE,
                    "rollout stalled at {} Running {when}",
                    n_running()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let socket_url = format!("unix://{}", socket.display());
        let mut poollet = start_poollet(&socket_url, &etcd_host, &counts);
        let mut kill_points = Vec::new();
        for kill in 1..=N_KILLS {
            // Spread the kills over the rollout: the k-th once k/(N_KILLS+1) of the machines
            // are Running, so every incarnation makes progress before it dies.
            let threshold = kill * N_MACHINES / (N_KILLS + 1);
            wait_running(threshold, &format!("before kill {kill}")).await;
            kill_points.push(n_running());
            kill9(poollet).await;
            poollet = start_poollet(&socket_url, &etcd_host, &counts);
        }
        wait_running(N_MACHINES, "after the kills").await;
        let rollout = rollout_started.elapsed();
        sampler_stop.cancel();
        let (worst_sampled, samples) = sampler.await.unwrap();

        // The end state, from the store and from the runtime over gRPC.
        let (machines, _) = store
            .list_typed::<Machine>(&ListOptions::all().field("spec.machinePoolRef.name", POOL))
            .await
            .unwrap();
        assert_eq!(machines.len(), N_MACHINES);
        let mut uids = HashMap::new();
        for m in &machines {
            assert_eq!(m.status.state, "Running", "{} not Running", m.metadata.name);
            assert!(
                m.status.machine_id.starts_with("iri-mock://"),
                "{} has no machineID",
                m.metadata.name
            );
            uids.insert(m.metadata.uid.clone(), m.status.machine_id.clone());
        }
        let iri = list_runtime(&mut client).await;
        let mut per_uid: HashMap<String, Vec<String>> = HashMap::new();
        for m in &iri {
            per_uid
                .entry(uid_label(m))
                .or_default()
                .push(m.metadata.clone().unwrap_or_default().id);
        }
        let duplicates: usize = per_uid
            .values()
            .map(|ids| ids.len().saturating_sub(1))
            .sum();
        let without_machine = per_uid
            .keys()
            .filter(|uid| !uids.contains_key(*uid))
            .count();
        for (uid, machine_id) in &uids {
            let ids = per_uid.get(uid).cloned().unwrap_or_default();
            let machine_ids: Vec<String> =
                ids.iter().map(|id| format!("iri-mock://{id}")).collect();
            assert_eq!(
                machine_ids.as_slice(),
                std::slice::from_ref(machine_id),
                "exactly one IRI machine per machine-uid, the one in machineID"
            );
        }
        kill9(poollet).await;
        follower.abort();

        println!(
            "kill9: {N_MACHINES} machines, {N_KILLS} SIGKILLs at {kill_points:?} Running; \
             store setup {created_in:.1?}, rollout {rollout:.1?}, total {:.1?}; \
             IRI machines {}, duplicates {duplicates} (max per uid sampled {worst_sampled} over \
             {samples} samples), without Machine {without_machine}; poollet logs: {} creates, \
             {} duplicate deletions, {} orphan deletions",
            started.elapsed(),
            iri.len(),
            counts.creates.load(Ordering::Relaxed),
            counts.duplicates.load(Ordering::Relaxed),
            counts.orphans.load(Ordering::Relaxed),
        );
        assert_eq!(duplicates, 0);
        assert_eq!(without_machine, 0);
        assert_eq!(iri.len(), N_MACHINES);
        assert!(worst_sampled <= 1, "two live IRI machines for one uid seen");
        assert_eq!(counts.duplicates.load(Ordering::Relaxed), 0);
        assert_eq!(counts.orphans.load(Ordering::Relaxed), 0);
        assert_eq!(kill_points.len(), N_KILLS);
    }
}
