//! Planes for the broker, built on `irikit_controlplane::ControlPlane` (machine scheduler,
//! pool-liveness controller, one machinepoollet per pool; no volume scheduler, see
//! [`plane_config`]): [`LowerPlane`], a plane over in-process `iri-mock` leaves (the broker
//! binary's embedded lower plane); and [`Hierarchy`], two levels: an upper plane whose pools
//! are brokers, each broker over a lower plane of several leaf pools.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use iri_mock::{MockRuntime, classes::MachineClassConfig};
use irikit_api::{
    Resource as _, Store, StoreExt as _,
    compute::MachineClass,
    meta::ObjectMeta,
    quantity::{Format, Quantity},
};
use irikit_controlplane::{ControlPlane, PlaneConfig};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::broker::{Broker, BrokerConfig};

/// The configuration of a broker's plane: machines only (the volume scheduler is off), short
/// timings for tests and benchmarks (IronCore's defaults are seconds), best-effort scheduling;
/// set `reservations` for reservation mode (IEP-11).
pub fn plane_config() -> PlaneConfig {
    PlaneConfig {
        prerequisite_requeue: Duration::from_millis(200),
        volume_scheduler: false,
        ..PlaneConfig::default()
    }
}

/// The MachineClass object of a mock class (cpu in cores, memory in bytes).
pub fn class_object(class: &MachineClassConfig) -> MachineClass {
    let mut capabilities = irikit_api::ResourceList::new();
    capabilities.insert(
        "cpu".to_owned(),
        Quantity::from_int(class.cpu, Format::DecimalSI),
    );
    capabilities.insert(
        "memory".to_owned(),
        Quantity::from_int(class.memory_bytes, Format::BinarySI),
    );
    for (k, v) in &class.extra {
        capabilities.insert(k.clone(), Quantity::from_int(*v, Format::DecimalSI));
    }
    MachineClass {
        metadata: ObjectMeta::named(&class.name),
        capabilities,
        ..MachineClass::default()
    }
}

/// Creates the MachineClass objects of `classes` in `store` (existing ones are kept).
pub async fn ensure_classes(
    store: &dyn Store,
    classes: &[MachineClassConfig],
) -> anyhow::Result<()> {
    for class in classes {
        match store.create(class_object(class).into_object()).await {
            Ok(_) | Err(irikit_api::store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e).context(format!("creating MachineClass {}", class.name)),
        }
    }
    Ok(())
}

/// One leaf pool: an in-process `iri-mock` machine runtime with its own classes and host.
#[derive(Debug, Clone)]
pub struct LeafConfig {
    /// The MachinePool name.
    pub pool: String,
    /// The classes and their quantities.
    pub classes: Vec<MachineClassConfig>,
    /// The host's local storage behind reservations.
    pub local_storage_bytes: i64,
    /// The host's cpu (millicores) and memory (bytes), when not the classes' sum.
    pub host_resources: Option<(i64, i64)>,
    /// Whether the leaf serves the reservation extension.
    pub reservations: bool,
    /// Whether every create must fit the leaf's capacity (see
    /// `iri_mock::MockRuntimeBuilder::enforce_capacity`).
    pub enforce_capacity: bool,
}

impl LeafConfig {
    /// A leaf with the mock's default classes, 1 TiB of local storage and reservations.
    pub fn new(pool: impl Into<String>) -> Self {
        LeafConfig {
            pool: pool.into(),
            classes: iri_mock::classes::default_machine_classes(),
            local_storage_bytes: iri_mock::DEFAULT_LOCAL_STORAGE_BYTES,
            host_resources: None,
            reservations: true,
            enforce_capacity: false,
        }
    }

    /// The mock builder of this leaf.
    pub fn builder(&self) -> iri_mock::MockRuntimeBuilder {
        let mut b = MockRuntime::builder()
            .machine_classes(self.classes.clone())
            .local_storage_bytes(self.local_storage_bytes)
            .reservations(self.reservations)
            .enforce_capacity(self.enforce_capacity);
        if let Some((cpu, memory)) = self.host_resources {
            b = b.host_resources(cpu, memory);
        }
        b
    }
}

/// A plane whose pools are in-process `iri-mock` leaves.
pub struct LowerPlane {
    plane: ControlPlane,
    leaves: Vec<(String, MockRuntime)>,
}

impl std::fmt::Debug for LowerPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LowerPlane")
            .field("plane", &self.plane)
            .field(
                "leaves",
                &self.leaves.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl LowerPlane {
    /// Starts a plane on `store` with `config` (see [`plane_config`]) and a machinepoollet per
    /// leaf (the MachineClasses of every leaf's classes are created first).
    pub async fn start(
        store: Arc<dyn Store>,
        config: PlaneConfig,
        leaves: &[LeafConfig],
    ) -> anyhow::Result<Self> {
        for leaf in leaves {
            ensure_classes(&*store, &leaf.classes).await?;
        }
        let plane = ControlPlane::start(store, config);
        let mut started = Vec::new();
        for leaf in leaves {
            let mock = leaf
                .builder()
                .start_in_process()
                .await
                .with_context(|| format!("starting the leaf {}", leaf.pool))?;
            plane.add_machine_poollet(
                &leaf.pool,
                &format!("irikit-leaf://{}", leaf.pool),
                mock.new_channel(),
            );
            started.push((leaf.pool.clone(), mock));
        }
        Ok(LowerPlane {
            plane,
            leaves: started,
        })
    }

    /// The plane.
    pub fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// The leaves (pool name, mock).
    pub fn leaves(&self) -> &[(String, MockRuntime)] {
        &self.leaves
    }

    /// Stops the plane, then the leaves.
    pub async fn shutdown(self, budget: Duration) -> bool {
        let stopped = self.plane.shutdown(budget).await;
        for (_, mock) in self.leaves {
            let _ = mock.shutdown().await;
        }
        stopped
    }
}

/// One broker of a [`Hierarchy`]: its name (the upper pool) and its leaves.
#[derive(Debug, Clone)]
pub struct BrokerNodeConfig {
    /// The upper MachinePool the broker is.
    pub pool: String,
    /// The lower plane's leaf pools.
    pub leaves: Vec<LeafConfig>,
}

/// A running broker of a [`Hierarchy`]: its lower plane and the socket it serves on.
#[derive(Debug)]
pub struct BrokerNode {
    /// The upper pool name.
    pub pool: String,
    /// The lower plane.
    pub lower: LowerPlane,
    /// The broker over the lower plane.
    pub broker: Broker,
    /// The broker's socket.
    pub socket: PathBuf,
}

/// Two levels: an upper plane whose pools are brokers, each over a lower plane of leaves.
/// Every store is in memory; every broker serves on a unix socket in a private temp dir.
pub struct Hierarchy {
    upper: ControlPlane,
    nodes: Vec<BrokerNode>,
    token: CancellationToken,
    servers: TaskTracker,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Hierarchy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hierarchy")
            .field("upper", &self.upper)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// The namespace brokers of a [`Hierarchy`] put their lower objects in.
pub const HIERARCHY_LOWER_NAMESPACE: &str = "brokered";

impl Hierarchy {
    /// Starts the hierarchy: every lower plane (configuration `lower`), a broker per lower
    /// plane, and the upper plane (configuration `upper`) with a machinepoollet per broker.
    /// `broker_config` is the template of every broker's configuration.
    pub async fn start(
        nodes: &[BrokerNodeConfig],
        upper: PlaneConfig,
        lower: PlaneConfig,
        broker_config: BrokerConfig,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("irikit-hierarchy-")
            .tempdir()
            .context("temp dir for the broker sockets")?;
        let upper_store: Arc<dyn Store> = Arc::new(irikit_api::store::memory::MemoryStore::new());
        let token = CancellationToken::new();
        let servers = TaskTracker::new();
        let mut started = Vec::new();
        let mut classes: BTreeMap<String, MachineClassConfig> = BTreeMap::new();
        for node in nodes {
            let store: Arc<dyn Store> = Arc::new(irikit_api::store::memory::MemoryStore::new());
            let lower = LowerPlane::start(store.clone(), lower.clone(), &node.leaves).await?;
            for leaf in &node.leaves {
                for c in &leaf.classes {
                    classes.entry(c.name.clone()).or_insert_with(|| c.clone());
                }
            }
            let broker = Broker::new(
                store,
                BrokerConfig {
                    namespace: HIERARCHY_LOWER_NAMESPACE.to_owned(),
                    ..broker_config.clone()
                },
            );
            let socket = dir.path().join(format!("{}.sock", node.pool));
            let listener = crate::bind(&socket)?;
            {
                let (broker, socket, token) = (broker.clone(), socket.clone(), token.clone());
                servers.spawn(async move {
                    if let Err(err) = crate::serve_on(broker, listener, &socket, token).await {
                        tracing::error!(error = %format!("{err:#}"), "broker server stopped");
                    }
                });
            }
            started.push(BrokerNode {
                pool: node.pool.clone(),
                lower,
                broker,
                socket,
            });
        }
        let classes: Vec<MachineClassConfig> = classes.into_values().collect();
        ensure_classes(&*upper_store, &classes).await?;
        let upper = ControlPlane::start(upper_store, upper);
        for node in &started {
            let channel = iri_spec::endpoint::connect_lazy(&iri_spec::endpoint::Endpoint::Unix(
                node.socket.clone(),
            ));
            upper.add_machine_poollet(
                &node.pool,
                &format!("irikit-broker://{}", node.pool),
                channel,
            );
        }
        Ok(Hierarchy {
            upper,
            nodes: started,
            token,
            servers,
            _dir: dir,
        })
    }

    /// The upper plane.
    pub fn upper(&self) -> &ControlPlane {
        &self.upper
    }

    /// The brokers.
    pub fn nodes(&self) -> &[BrokerNode] {
        &self.nodes
    }

    /// Waits (poll with a deadline) until every upper pool (one per broker) and every leaf
    /// pool is Ready with its capacity announced and its poollet has probed reservation
    /// support (the `reservation.irikit.dev/supported` annotation is set; until then a
    /// reservation-mode scheduler treats the pool as best-effort).
    pub async fn wait_announced(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let mut planes: Vec<(&ControlPlane, usize)> = vec![(&self.upper, self.nodes.len())];
        planes.extend(
            self.nodes
                .iter()
                .map(|n| (n.lower.plane(), n.lower.leaves().len())),
        );
        for (plane, n) in planes {
            loop {
                let (pools, _) = plane
                    .store()
                    .list_typed::<irikit_api::compute::MachinePool>(&irikit_api::ListOptions::all())
                    .await?;
                let ready = pools
                    .iter()
                    .filter(|p| p.status.state == "Ready" && !p.status.capacity.is_empty())
                    .filter(|p| {
                        p.metadata
                            .annotations
                            .contains_key(irikit_api::reservation::RESERVATION_SUPPORTED_ANNOTATION)
                    })
                    .count();
                if ready >= n {
                    break;
                }
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "{ready} of {n} pools announced within {within:?}: {:?}; failures {:?}",
                    pools
                        .iter()
                        .map(|p| (&p.metadata.name, &p.status.state, p.status.capacity.len()))
                        .collect::<Vec<_>>(),
                    plane.failures()
                );
                // Polling the stores for the poollets' announcements, with a deadline.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Stops the upper plane, the broker servers, then every lower plane.
    pub async fn shutdown(self, budget: Duration) -> bool {
        let mut stopped = self.upper.shutdown(budget).await;
        self.token.cancel();
        self.servers.close();
        stopped &= tokio::time::timeout(budget, self.servers.wait())
            .await
            .is_ok();
        for node in self.nodes {
            stopped &= node.lower.shutdown(budget).await;
        }
        stopped
    }
}
