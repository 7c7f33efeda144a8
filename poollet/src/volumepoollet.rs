//! The volumepoollet: wires the volume pool announcer, the Status probe, the Volume and
//! VolumeSnapshot controllers, the store watchers, the runtime relist and the event mapper
//! together and runs them until cancelled (reference §4.2).

use std::{sync::Arc, time::Duration};

use irikit_api::{Kind, ListOptions, Object, Store};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::info;

use crate::{
    controller::{ObjectCache, ObjectRef, Tasks, WorkQueue},
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

        let mut tasks = Tasks::new(self.store.clone(), token.clone());
        tasks.controller("volumepool", 1, &pool_queue, pool_reconciler);
        let concurrency = config.max_concurrent_reconciles;
        if config.volume_controller {
            let reconciler = VolumeReconciler::new(
                self.store.clone(),
                client.clone(),
                runtime_name.clone(),
                view.clone(),
                config.volume.clone(),
            );
            tasks.controller("volume", concurrency, &volume_queue, Arc::new(reconciler));
        }
        if config.snapshot_controller {
            let reconciler = VolumeSnapshotReconciler::new(
                self.store.clone(),
                client.clone(),
                runtime_name.clone(),
                config.volume.clone(),
            );
            tasks.controller(
                "volumesnapshot",
                concurrency,
                &snapshot_queue,
                Arc::new(reconciler),
            );
        }
        // New or changed runtime classes, a VolumeClass change: recompute the pool and give
        // volumes whose class did not map another chance.
        let reclass = {
            let queue = pool_queue.clone();
            let key = pool_key.clone();
            let volume_queue = volume_queue.clone();
            let volume_cache = volume_cache.clone();
            move || {
                queue.add(key.clone());
                wake_waiting(&volume_cache, &volume_queue, |_| true);
            }
        };
        tasks.spawn(heartbeat::<VolumeFlavor>(
            client.clone(),
            pool_config.status_interval,
            pool_config.status_timeout,
            view,
            None,
            {
                let reclass = reclass.clone();
                move |changed| {
                    if changed {
                        reclass();
                    }
                }
            },
            token.clone(),
        ));
        // Volumes of the pool: reconcile them, recompute allocatable, wake their snapshots.
        tasks.watch(
            Kind::Volume,
            ListOptions::all().field("spec.volumePoolRef.name", &pool_config.pool_name),
            volume_cache.clone(),
            {
                let volume_queue = volume_queue.clone();
                let snapshot_queue = snapshot_queue.clone();
                let snapshot_cache = snapshot_cache.clone();
                move |obj| {
                    volume_queue.add(ObjectRef::of(obj));
                    pool_queue.add(pool_key.clone());
                    let meta = obj.metadata();
                    snapshot_queue.add_matching(&snapshot_cache, |s| {
                        matches!(s, Object::VolumeSnapshot(s)
                            if s.metadata.namespace == meta.namespace
                                && s.spec.volume_ref.name == meta.name)
                    });
                }
            },
        );
        tasks.watch(
            Kind::VolumeClass,
            ListOptions::all(),
            ObjectCache::new(),
            move |_| reclass(),
        );
        // Snapshots (all of them; the reconciler filters by pool): reconcile, and wake the
        // volumes restoring from them.
        tasks.watch(Kind::VolumeSnapshot, ListOptions::all(), snapshot_cache, {
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
        });
        // Secrets: volumes waiting for an encryption Secret (their own or inherited) in that
        // namespace get another chance.
        tasks.watch(Kind::Secret, ListOptions::all(), ObjectCache::new(), {
            let volume_queue = volume_queue.clone();
            let volume_cache = volume_cache.clone();
            move |secret| {
                let namespace = &secret.metadata().namespace;
                wake_waiting(&volume_cache, &volume_queue, |v| {
                    &v.metadata.namespace == namespace
                });
            }
        });
        tasks.spawn(runtime_relist(
            client.clone(),
            config.relist_period,
            pool_config.status_timeout,
            move |key| volume_queue.add(key),
            move |key| snapshot_queue.add(key),
            token.clone(),
        ));
        tasks.spawn(event_mapper::<VolumeFlavor>(
            self.store.clone(),
            client,
            config.event_interval,
            pool_config.status_timeout,
            token,
        ));
        tasks.join().await;
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
    queue.add_matching(
        cache,
        |obj| matches!(obj, Object::Volume(v) if v.status.volume_id.is_empty() && pred(v)),
    );
}
