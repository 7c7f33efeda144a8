//! The assembled control plane in one process: a [`Store`] (memory or etcd), the machine
//! scheduler (best-effort or reservation mode), the volume scheduler, the pool-liveness
//! controller ([`crate::liveness`]), and a machinepoollet per machine runtime and a
//! volumepoollet per volume runtime, all stopped by one cancellation token. `irikit up`, the
//! conformance suite's lifecycle level and the machine broker's planes run it.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use irikit_api::Store;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::Channel;

/// Timings of the embedded control plane (much shorter than IronCore's defaults, so that a
/// lifecycle run takes seconds).
#[derive(Debug, Clone)]
pub struct PlaneConfig {
    /// Poollet heartbeat (Status probe) interval.
    pub heartbeat_interval: Duration,
    /// Timeout of one heartbeat probe and of the poollet's other Status/Version calls
    /// (below `heartbeat_interval`).
    pub status_timeout: Duration,
    /// Interval of the poollet's unfiltered runtime relist.
    pub relist_period: Duration,
    /// Requeue delay of a converging machine.
    pub converging_requeue: Duration,
    /// Requeue delay while a prerequisite (class, Secret) is missing.
    pub prerequisite_requeue: Duration,
    /// Timeout of every other poollet RPC.
    pub rpc_timeout: Duration,
    /// Grace period of the pool lifecycle controller: a MachinePool whose Lease and Ready
    /// condition stay unchanged this long is marked `Ready=Unknown` (IronCore: 50 s).
    pub pool_lifecycle_grace: Duration,
    /// The schedulers' settings (concurrency, batch, events).
    pub scheduler: scheduler::Config,
    /// The machine scheduler's reservation mode (IEP-11; `None`: best-effort, the default).
    pub reservations: Option<scheduler::ReservationConfig>,
    /// Whether the volume scheduler runs (a machine-only plane, e.g. a broker's, leaves it off).
    pub volume_scheduler: bool,
}

impl Default for PlaneConfig {
    fn default() -> Self {
        PlaneConfig {
            heartbeat_interval: Duration::from_millis(500),
            status_timeout: Duration::from_millis(400),
            relist_period: Duration::from_millis(200),
            converging_requeue: Duration::from_millis(50),
            prerequisite_requeue: Duration::from_millis(500),
            rpc_timeout: Duration::from_secs(10),
            pool_lifecycle_grace: Duration::from_secs(5),
            scheduler: scheduler::Config::default(),
            reservations: None,
            volume_scheduler: true,
        }
    }
}

/// A running control plane. Components that stop with an error are recorded in
/// [`failures`](Self::failures) (the others keep running).
pub struct ControlPlane {
    store: Arc<dyn Store>,
    config: PlaneConfig,
    token: CancellationToken,
    tracker: TaskTracker,
    failures: Arc<Mutex<Vec<String>>>,
    /// The running machine scheduler: its token, its task and whether it runs in reservation
    /// mode (see [`ControlPlane::set_machine_scheduler`]).
    machine_scheduler: tokio::sync::Mutex<(CancellationToken, Option<tokio::task::JoinHandle<()>>)>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("config", &self.config)
            .field("failures", &self.failures())
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Starts the machine scheduler, the volume scheduler (unless
    /// [`PlaneConfig::volume_scheduler`] is off) and the pool-liveness controller (silent pools
    /// turn `Ready=Unknown`) on `store`.
    pub fn start(store: Arc<dyn Store>, config: PlaneConfig) -> Self {
        let plane = ControlPlane {
            store,
            config,
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
            failures: Arc::default(),
            machine_scheduler: tokio::sync::Mutex::new((CancellationToken::new(), None)),
        };
        let (token, handle) = plane.start_machine_scheduler(plane.config.reservations.clone());
        if let Ok(mut slot) = plane.machine_scheduler.try_lock() {
            *slot = (token, Some(handle));
        }
        if plane.config.volume_scheduler {
            let volumes = scheduler::VolumeScheduler::new(
                plane.store.clone(),
                plane.config.scheduler.clone(),
            );
            let token = plane.token.clone();
            plane.spawn("volume-scheduler", async move {
                volumes.run(token).await.map_err(error_chain)
            });
        }
        let (token, store) = (plane.token.clone(), plane.store.clone());
        let grace = plane.config.pool_lifecycle_grace;
        plane.spawn("machinepool-lifecycle", async move {
            crate::liveness::run(store, grace, token).await;
            Ok(())
        });
        plane
    }

    fn start_machine_scheduler(
        &self,
        reservations: Option<scheduler::ReservationConfig>,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let token = self.token.child_token();
        let (store, config, run) = (
            self.store.clone(),
            self.config.scheduler.clone(),
            token.clone(),
        );
        let handle = self.spawn("machine-scheduler", async move {
            scheduler::run_machine_scheduler(store, config, reservations, run)
                .await
                .map_err(error_chain)
        });
        (token, handle)
    }

    /// Replaces the running machine scheduler: reservation mode with `reservations`, else
    /// best-effort. The old one is stopped (its in-flight binds finish) before the new one
    /// starts, so the two never bind the same Machine. The lifecycle's reservation cases
    /// switch to reservation mode for their run and back afterwards.
    pub async fn set_machine_scheduler(&self, reservations: Option<scheduler::ReservationConfig>) {
        let mut slot = self.machine_scheduler.lock().await;
        slot.0.cancel();
        if let Some(handle) = slot.1.take() {
            let _ = handle.await;
        }
        if self.token.is_cancelled() {
            return;
        }
        let (token, handle) = self.start_machine_scheduler(reservations);
        *slot = (token, Some(handle));
    }

    fn spawn(
        &self,
        component: &'static str,
        fut: impl Future<Output = Result<(), String>> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let failures = self.failures.clone();
        self.tracker.spawn(async move {
            if let Err(err) = fut.await {
                tracing::error!(component, error = %err, "control-plane component stopped");
                failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(format!("{component} stopped: {err}"));
            }
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The timings.
    pub fn config(&self) -> &PlaneConfig {
        &self.config
    }

    /// Starts a machinepoollet announcing `pool` (topology zone label = the pool name, so
    /// Machines can select it) against the runtime behind `channel`; cancelling the returned
    /// token stops it (the plane's shutdown stops it too).
    pub fn add_machine_poollet(
        &self,
        pool: &str,
        provider_id: &str,
        channel: Channel,
    ) -> CancellationToken {
        let mut config = poollet::Config::new(pool, provider_id);
        config.pool.topology_zone = pool.to_owned();
        config.pool.heartbeat_interval = self.config.heartbeat_interval;
        config.pool.status_timeout = self.config.status_timeout;
        config.relist_period = self.config.relist_period;
        config.event_resync_period = self.config.heartbeat_interval;
        config.machine.converging_requeue = self.config.converging_requeue;
        config.machine.prerequisite_requeue = self.config.prerequisite_requeue;
        config.machine.rpc_timeout = self.config.rpc_timeout;
        let poollet = poollet::MachinePoollet::new(self.store.clone(), channel, config);
        let token = self.token.child_token();
        let run = token.clone();
        self.spawn("machinepoollet", async move {
            poollet.run(run).await.map_err(error_chain)
        });
        token
    }

    /// Starts a volumepoollet announcing `pool` (topology zone label = the pool name) against
    /// the volume runtime behind `channel`.
    pub fn add_volume_poollet(&self, pool: &str, provider_id: &str, channel: Channel) {
        let mut config = poollet::VolumePoolletConfig::new(pool, provider_id);
        config.pool.topology_zone = pool.to_owned();
        config.pool.status_interval = self.config.heartbeat_interval;
        config.pool.status_timeout = self.config.status_timeout;
        config.relist_period = self.config.relist_period;
        config.event_interval = self.config.heartbeat_interval;
        config.volume.converging_requeue = self.config.converging_requeue;
        config.volume.prerequisite_requeue = self.config.prerequisite_requeue;
        config.volume.rpc_timeout = self.config.rpc_timeout;
        let poollet = poollet::VolumePoollet::new(self.store.clone(), channel, config);
        let token = self.token.clone();
        self.spawn("volumepoollet", async move {
            poollet.run(token).await.map_err(error_chain)
        });
    }

    /// What stopped with an error so far (`component stopped: error`).
    pub fn failures(&self) -> Vec<String> {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Resolves with the first failure once a component stopped with an error.
    pub async fn failed(&self) -> String {
        let mut interval = tokio::time::interval(Duration::from_millis(200));
        loop {
            interval.tick().await;
            if let Some(failure) = self.failures().into_iter().next() {
                return failure;
            }
        }
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Cancels every component and waits up to `budget` for them to finish their in-flight
    /// work; returns false when some did not stop in time.
    pub async fn shutdown(&self, budget: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(budget, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// An error with its causes, on one line (what [`ControlPlane::failures`] records).
fn error_chain(err: impl std::error::Error + Send + Sync + 'static) -> String {
    format!("{:#}", anyhow::Error::new(err))
}
