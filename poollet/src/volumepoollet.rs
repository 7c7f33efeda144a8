//! The volumepoollet: wires the volume pool announcer, the Status probe, the Volume and
//! VolumeSnapshot controllers, the store watchers, the runtime relist and the event mapper
//! together and runs them until cancelled (reference §4.2).

use std::{sync::Arc, time::Duration};

use irikit_api::{Kind, ListOptions, Object, Store};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::info;

use crate::{
    controller::{self, ControllerConfig, ObjectCache, ObjectRef, WorkQueue},
    error::{Error, Result},
    flavor::{Flavor, VolumeFlavor},
    pool::{VolumePoolConfig, VolumePoolReconciler, VolumeRuntimeView},
    runtime::{connect, event_mapper, heartbeat, probe_once},
    volume::{VolumeConfig, VolumeReconciler, VolumeSnapshotReconciler, runtime_relist},
};

/// Everything the volumepoollet needs besides the store and the runtime channel.
#[derive(Debug, Clone)]
pub struct Config {
    /// Pool announcement and Status probe.
    pub pool: VolumePoolConfig,
    /// Volume and snapshot reconcile settings.
    pub volume: VolumeConfig,
    /// Reconciles in flight at once per controller (`--max-concurrent-reconciles`).
    pub max_concurrent_reconciles: usize,
    /// Interval of the unfiltered runtime relist (`--relist-period`).
    pub relist_period: Duration,
    /// Interval of the ListEvents → Event mapper (IronCore: 1 min).
    pub event_interval: Duration,
    /// Run the Volume controller (`--controllers volume`).
    pub volume_controller: bool,
    /// Run the VolumeSnapshot controller (`--controllers volumesnapshot`).
    pub snapshot_controller: bool,
}

impl Config {
    /// Defaults for a pool.
    pub fn new(pool_name: impl Into<String>, provider_id: impl Into<String>) -> Self {
        let pool = VolumePoolConfig::new(pool_name, provider_id);
        Self {
            volume: VolumeConfig::new(pool.pool_name.clone()),
            pool,
            max_concurrent_reconciles: 16,
            relist_period: Duration::from_secs(5),
            event_interval: Duration::from_secs(60),
            volume_controller: true,
            snapshot_controller: true,
        }
    }

    /// Checks the settings (see [`VolumePoolConfig::validate`]; periods and concurrency > 0).
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.pool.validate()?;
        if self.relist_period.is_zero() || self.event_interval.is_zero() {
            return Err("the relist period and the event interval must be positive".into());
        }
        if self.max_concurrent_reconciles == 0 {
            return Err("the number of concurrent reconciles must be positive".into());
        }
        if self.volume.create_timeout.is_zero() {
            return Err("the create timeout must be positive".into());
        }
        Ok(())
    }
}

/// The volumepoollet.
pub struct VolumePoollet {
    store: Arc<dyn Store>,
    channel: Channel,
    config: Config,
}

impl VolumePoollet {
    /// A poollet for `config.pool.pool_name` talking to the volume runtime over `channel`.
    pub fn new(store: Arc<dyn Store>, channel: Channel, config: Config) -> Self {
        Self {
            store,
            channel,
            config,
        }
    }

    /// Starts up (Version, a first Status, the VolumePool), then runs every component until
    /// `token` is cancelled and in-flight reconciles have finished. Startup failures are
    /// returned (IronCore's poollet exits on them too).
    pub async fn run(self, token: CancellationToken) -> Result<()> {
        let config = self.config;
        config
            .validate()
            .map_err(|reason| Error::BadResponse(format!("invalid config: {reason}")))?;
        let pool_config = config.pool.clone();
        let client = VolumeFlavor::client(self.channel);
        let runtime_name =
            connect::<VolumeFlavor>(&client, pool_config.status_timeout, &pool_config.pool_name)
                .await?;
        let view = VolumeRuntimeView::default();
        probe_once::<VolumeFlavor>(&client, pool_config.status_timeout, &view).await;
        let pool_reconciler = Arc::new(VolumePoolReconciler::new(
            self.store.clone(),
            pool_config.clone(),
            view.clone(),
        ));
        pool_reconciler.ensure_pool().await?;
        let pool_key = pool_reconciler.key();

        let pool_queue: WorkQueue<ObjectRef> = WorkQueue::new();
        let volume_queue: WorkQueue<ObjectRef> = WorkQueue::new();
        let snapshot_queue: WorkQueue<ObjectRef> = WorkQueue::new();
        let volume_cache = ObjectCache::new();
        let snapshot_cache = ObjectCache::new();
        pool_queue.add(pool_key.clone());

        let mut tasks = JoinSet::new();
        tasks.spawn(controller::run(
            pool_queue.clone(),
            pool_reconciler,
            ControllerConfig {
                name: "volumepool",
                concurrency: 1,
            },
            token.clone(),
        ));
        if config.volume_controller {
            tasks.spawn(controller::run(
                volume_queue.clone(),
                Arc::new(VolumeReconciler::new(
                    self.store.clone(),
                    client.clone(),
                    runtime_name.clone(),
                    view.clone(),
                    config.volume.clone(),
                )),
                ControllerConfig {
                    name: "volume",
                    concurrency: config.max_concurrent_reconciles,
                },
                token.clone(),
            ));
        }
        if config.snapshot_controller {
            tasks.spawn(controller::run(
                snapshot_queue.clone(),
                Arc::new(VolumeSnapshotReconciler::new(
                    self.store.clone(),
                    client.clone(),
                    runtime_name.clone(),
                    config.volume.clone(),
                )),
                ControllerConfig {
                    name: "volumesnapshot",
                    concurrency: config.max_concurrent_reconciles,
                },
                token.clone(),
            ));
        }
        tasks.spawn(heartbeat::<VolumeFlavor>(
            client.clone(),
            pool_config.status_interval,
            pool_config.status_timeout,
            view,
            None,
            {
                let queue = pool_queue.clone();
                let key = pool_key.clone();
                let volume_queue = volume_queue.clone();
                let volume_cache = volume_cache.clone();
                // New or changed runtime classes: recompute the pool and give volumes whose
                // class did not map another chance.
                move |changed| {
                    if changed {
                        queue.add(key.clone());
                        wake_waiting(&volume_cache, &volume_queue, |_| true);
                    }
                }
            },
            token.clone(),
        ));
        // Volumes of the pool: reconcile them, recompute allocatable, wake their snapshots.
        tasks.spawn(controller::watch(
            self.store.clone(),
            Kind::Volume,
            ListOptions::all().field("spec.volumePoolRef.name", &pool_config.pool_name),
            volume_cache.clone(),
            {
                let volume_queue = volume_queue.clone();
                let snapshot_queue = snapshot_queue.clone();
                let snapshot_cache = snapshot_cache.clone();
                let pool_queue = pool_queue.clone();
                let pool_key = pool_key.clone();
                move |obj| {
                    volume_queue.add(ObjectRef::of(obj));
                    pool_queue.add(pool_key.clone());
                    let meta = obj.metadata();
                    for s in snapshot_cache.list() {
                        if matches!(&s, Object::VolumeSnapshot(s)
                            if s.metadata.namespace == meta.namespace
                                && s.spec.volume_ref.name == meta.name)
                        {
                            snapshot_queue.add(ObjectRef::of(&s));
                        }
                    }
                }
            },
            token.clone(),
        ));
        tasks.spawn(controller::watch(
            self.store.clone(),
            Kind::VolumeClass,
            ListOptions::all(),
            ObjectCache::new(),
            {
                let volume_queue = volume_queue.clone();
                let volume_cache = volume_cache.clone();
                let pool_queue = pool_queue.clone();
                let pool_key = pool_key.clone();
                move |_| {
                    pool_queue.add(pool_key.clone());
                    wake_waiting(&volume_cache, &volume_queue, |_| true);
                }
            },
            token.clone(),
        ));
        // Snapshots (all of them; the reconciler filters by pool): reconcile, and wake the
        // volumes restoring from them.
        tasks.spawn(controller::watch(
            self.store.clone(),
            Kind::VolumeSnapshot,
            ListOptions::all(),
            snapshot_cache,
            {
                let volume_queue = volume_queue.clone();
                let volume_cache = volume_cache.clone();
                let snapshot_queue = snapshot_queue.clone();
                move |obj| {
                    snapshot_queue.add(ObjectRef::of(obj));
                    let meta = obj.metadata();
                    wake_waiting(&volume_cache, &volume_queue, |v| {
                        v.metadata.namespace == meta.namespace
                            && v.spec
                                .data_source
                                .as_ref()
                                .and_then(|d| d.volume_snapshot_ref.as_ref())
                                .is_some_and(|r| r.name == meta.name)
                    });
                }
            },
            token.clone(),
        ));
        // Secrets: volumes waiting for an encryption Secret (their own or inherited) in that
        // namespace get another chance.
        tasks.spawn(controller::watch(
            self.store.clone(),
            Kind::Secret,
            ListOptions::all(),
            ObjectCache::new(),
            {
                let volume_queue = volume_queue.clone();
                let volume_cache = volume_cache.clone();
                move |secret| {
                    let namespace = &secret.metadata().namespace;
                    wake_waiting(&volume_cache, &volume_queue, |v| {
                        &v.metadata.namespace == namespace
                    });
                }
            },
            token.clone(),
        ));
        tasks.spawn(runtime_relist(
            client.clone(),
            config.relist_period,
            pool_config.status_timeout,
            {
                let queue = volume_queue.clone();
                move |key| queue.add(key)
            },
            {
                let queue = snapshot_queue.clone();
                move |key| queue.add(key)
            },
            token.clone(),
        ));
        tasks.spawn(event_mapper::<VolumeFlavor>(
            self.store.clone(),
            client,
            config.event_interval,
            pool_config.status_timeout,
            token.clone(),
        ));
        while tasks.join_next().await.is_some() {}
        info!("volumepoollet stopped");
        Ok(())
    }
}

/// Queues the cached Volumes without a runtime volume yet (no volumeID) that match `pred`.
fn wake_waiting(
    cache: &ObjectCache,
    queue: &WorkQueue<ObjectRef>,
    pred: impl Fn(&irikit_api::storage::Volume) -> bool,
) {
    for obj in cache.list() {
        if let Object::Volume(v) = &obj
            && v.status.volume_id.is_empty()
            && pred(v)
        {
            queue.add(ObjectRef::of(&obj));
        }
    }
}
