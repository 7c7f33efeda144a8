//! `irikit up`: the whole irikit control plane in one process — a store (memory or etcd),
//! both schedulers, the machinepoollet and the volumepoollet — against the embedded mock
//! runtimes or real runtime endpoints, with YAML applied at start and every state change of
//! the store printed as one line.

use std::{collections::BTreeMap, io::Write as _, sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::StreamExt as _;
use irikit_api::{Kind, Object, Store, meta::condition_status, store::EventType};
use tokio_util::sync::CancellationToken;

use crate::{ControlPlane, PlaneConfig};

/// The seed's examples (a MachinePool and a MachineClass), applied unless disabled.
pub const SEED_EXAMPLES: &str = include_str!("../examples/seed.yaml");
/// A Machine of the seed's class, applied with the seed's examples.
pub const MACHINE_EXAMPLE: &str = include_str!("../examples/machine.yaml");

/// How the embedded runtimes are described.
const EMBEDDED: &str = "embedded iri-mock (in-process)";

/// The delays of the embedded mock: short but non-zero, so that PENDING, TERMINATING and the
/// polling code paths are exercised.
pub fn embedded_delays() -> iri_mock::Delays {
    iri_mock::Delays {
        provision: Duration::from_millis(5),
        apply: Duration::from_millis(2),
        power: Duration::from_millis(2),
        terminate: Duration::from_millis(100),
    }
}

/// A builder of the embedded mock runtimes `up` runs without endpoints (the conformance
/// suite's embedded target is the same; its tests add mutants or faults to it).
pub fn embedded_builder() -> iri_mock::MockRuntimeBuilder {
    let builder = iri_mock::MockRuntime::builder().delays(embedded_delays());
    // The scripted console behind Exec (loopback TCP), for the `machine.exec.console.*` cases.
    match iri_mock::console::ConsoleServer::bind() {
        Ok(console) => builder.console(console),
        Err(_) => builder,
    }
}

/// What `up` runs.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// `memory` or `etcd://host:port[,host:port]`.
    pub store: String,
    /// Machine runtime (`None`: the embedded mock, unless `volume` is given).
    pub machine: Option<iri_spec::endpoint::Endpoint>,
    /// Volume runtime (`None`: the embedded mock, unless `machine` is given).
    pub volume: Option<iri_spec::endpoint::Endpoint>,
    /// MachinePool name.
    pub machine_pool: String,
    /// VolumePool name.
    pub volume_pool: String,
    /// YAML documents to apply at start, with where they came from.
    pub documents: Vec<(String, String)>,
    /// Control-plane timings.
    pub plane: PlaneConfig,
}

/// One line describing `obj`'s state, for the change log (`None`: not worth a line).
pub fn summary(obj: &Object) -> Option<String> {
    let pool = |r: &Option<irikit_api::meta::LocalObjectReference>| {
        r.as_ref().map_or("-".to_owned(), |r| r.name.clone())
    };
    let deleting = |o: &Object| {
        if o.metadata().is_deleting() {
            " (deleting)"
        } else {
            ""
        }
    };
    Some(match obj {
        Object::Machine(m) => format!(
            "pool={} state={} observedGeneration={}/{} machineID={}{}",
            pool(&m.spec.machine_pool_ref),
            or_dash(&m.status.state),
            m.status.observed_generation,
            m.metadata.generation,
            or_dash(&m.status.machine_id),
            deleting(obj)
        ),
        Object::MachinePool(p) => format!(
            "Ready={} classes=[{}] capacity=[{}]",
            condition_status(&p.status.conditions, "Ready").unwrap_or("-"),
            names(&p.status.available_machine_classes),
            crate::ctl::joined(&p.status.allocatable, "")
        ),
        Object::Volume(v) => format!(
            "pool={} state={} volumeID={}{}",
            pool(&v.spec.volume_pool_ref),
            or_dash(&v.status.state),
            or_dash(&v.status.volume_id),
            deleting(obj)
        ),
        Object::VolumePool(p) => format!(
            "classes=[{}] allocatable=[{}]",
            names(&p.status.available_volume_classes),
            crate::ctl::joined(&p.status.allocatable, "")
        ),
        Object::Event(e) => format!(
            "{} {} {}/{}: {}",
            e.reason,
            e.involved_object.kind,
            e.involved_object.namespace,
            e.involved_object.name,
            e.message
        ),
        _ => format!("generation {}", obj.metadata().generation),
    })
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn names(list: &[irikit_api::meta::LocalObjectReference]) -> String {
    list.iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Prints a line whenever an object's summary changes (and when it is deleted), until
/// `token` is cancelled. Relists when the watch expires.
async fn log_changes(
    store: Arc<dyn Store>,
    mut revision: u64,
    out: Arc<dyn Fn(String) + Send + Sync>,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let mut last: BTreeMap<(Kind, String), String> = BTreeMap::new();
    loop {
        let mut stream = store
            .watch(None, revision)
            .await
            .context("watching the store")?;
        loop {
            let event = tokio::select! {
                () = token.cancelled() => return Ok(()),
                event = stream.next() => event,
            };
            let Some(event) = event else { break };
            let event = match event {
                Ok(event) => event,
                Err(irikit_api::store::Error::Expired { .. }) => {
                    revision = store
                        .revision()
                        .await
                        .context("reading the store revision")?;
                    break;
                }
                Err(err) => return Err(anyhow::Error::new(err).context("watching the store")),
            };
            revision = event.revision;
            let obj = &event.object;
            let key = (obj.kind(), obj.key());
            let name = format!("{} {}", obj.kind().as_str(), obj.key());
            if event.type_ == EventType::Deleted {
                last.remove(&key);
                out(format!("{name}: deleted"));
                continue;
            }
            let Some(line) = summary(obj) else { continue };
            if last.get(&key) != Some(&line) {
                out(format!("{name}: {line}"));
                last.insert(key, line);
            }
        }
    }
}

/// Runs `up` until `token` is cancelled: prints progress through `out`, applies the
/// documents, then logs state changes. Returns after a graceful shutdown.
pub async fn run(
    config: UpConfig,
    out: Arc<dyn Fn(String) + Send + Sync>,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let store = irikit_api::store::open(&config.store)
        .await
        .with_context(|| format!("opening the store {}", config.store))?;
    let embedded = config.machine.is_none() && config.volume.is_none();
    let mock = if embedded {
        Some(
            embedded_builder()
                .start_in_process()
                .await
                .context("starting the embedded iri-mock")?,
        )
    } else {
        None
    };
    // The runtime a poollet reaches, described, and a channel of its own to it.
    let upstream = |endpoint: &Option<iri_spec::endpoint::Endpoint>| match (endpoint, &mock) {
        (Some(e), _) => Some((e.to_string(), iri_spec::endpoint::connect_lazy(e))),
        (None, Some(mock)) => Some((EMBEDDED.to_owned(), mock.new_channel())),
        (None, None) => None,
    };
    let plane = ControlPlane::start(store.clone(), config.plane.clone());
    out(format!("store {} (schedulers running)", config.store));
    let provider = |pool: &str| format!("irikit-up://{pool}");
    if let Some((upstream, channel)) = upstream(&config.machine) {
        out(format!(
            "machinepoollet: pool {} on {upstream}",
            config.machine_pool
        ));
        plane.add_machine_poollet(
            &config.machine_pool,
            &provider(&config.machine_pool),
            channel,
        );
    }
    if let Some((upstream, channel)) = upstream(&config.volume) {
        out(format!(
            "volumepoollet: pool {} on {upstream}",
            config.volume_pool
        ));
        plane.add_volume_poollet(&config.volume_pool, &provider(&config.volume_pool), channel);
    }
    let revision = store
        .revision()
        .await
        .context("reading the store revision")?;
    let log_token = CancellationToken::new();
    let logger = tokio::spawn(log_changes(
        store.clone(),
        revision,
        out.clone(),
        log_token.clone(),
    ));
    let applied = apply_documents(&*store, &config.documents, &*out).await;
    if applied.is_ok() {
        out("up: running (Ctrl-C or SIGTERM stops)".to_owned());
        tokio::select! {
            () = token.cancelled() => {}
            res = plane.failed() => {
                out(format!("up: {res}"));
            }
        }
    }
    out("up: shutting down".to_owned());
    let stopped = plane.shutdown(Duration::from_secs(20)).await;
    log_token.cancel();
    if let Ok(Err(err)) = logger.await {
        out(format!("up: change log stopped: {err:#}"));
    }
    if let Some(mock) = mock {
        let _ = mock.shutdown().await;
    }
    applied?;
    anyhow::ensure!(stopped, "the control plane did not stop within 20s");
    let failures = plane.failures();
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("; "));
    Ok(())
}

/// Applies every document in order, printing a line per object.
async fn apply_documents(
    store: &dyn Store,
    documents: &[(String, String)],
    out: &(dyn Fn(String) + Send + Sync),
) -> anyhow::Result<()> {
    for (origin, text) in documents {
        let objects =
            irikit_api::parse_yaml_documents(text).with_context(|| format!("parsing {origin}"))?;
        for obj in objects {
            let name = format!("{} {}", obj.kind().as_str(), obj.key());
            irikit_api::store::apply(store, obj)
                .await
                .with_context(|| format!("applying {name} from {origin}"))?;
            out(format!("applied {name} ({origin})"));
        }
    }
    Ok(())
}

/// A writer for [`run`]'s `out` that prints each line to stdout.
pub fn stdout_lines() -> Arc<dyn Fn(String) + Send + Sync> {
    Arc::new(|line| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    })
}
