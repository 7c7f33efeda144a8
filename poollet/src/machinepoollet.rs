//! The machinepoollet: wires the pool announcer, the heartbeat (with the pool Lease), the
//! Machine controller, the store watchers, the runtime event mapper and the runtime relist
//! together and runs them until cancelled.

use std::{sync::Arc, time::Duration};

use irikit_api::{Kind, ListOptions, Store};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::info;

use crate::{
    controller::{ObjectCache, ObjectRef, Tasks, WorkQueue},
    error::{Error, Result},
    flavor::{Flavor, MachineFlavor},
    lease::PoolLease,
    machine::{MachineConfig, MachineReconciler, runtime_relist, volumes},
    pool::{MachinePoolReconciler, PoolConfig, RuntimeView},
    reservation::{ReservationConfig, ReservationReconciler, asks_pool, reservation_relist},
    runtime::{connect, event_mapper, heartbeat, probe_once},
};

/// How long machine changes are batched before the pool's allocatable is recounted.
const POOL_RECOUNT_DELAY: Duration = Duration::from_millis(100);

/// Everything the machinepoollet needs besides the store and the runtime channel.
#[derive(Debug, Clone)]
pub struct Config {
    /// Pool announcement and heartbeat.
    pub pool: PoolConfig,
    /// Machine reconcile settings.
    pub machine: MachineConfig,
    /// Machine reconciles in flight at once (`--max-concurrent-reconciles`).
    pub max_concurrent_reconciles: usize,
    /// Interval of the unfiltered runtime relist (`--relist-period`).
    pub relist_period: Duration,
    /// Interval of the runtime event mapper (`--event-resync-period`).
    pub event_resync_period: Duration,
    /// Pass Reservations for this pool down to the runtime (IEP-11; a runtime without the
    /// extension is probed and announced `reservation.irikit.dev/supported: "false"`).
    pub reservations: bool,
}

impl Config {
    /// Defaults for a pool.
    pub fn new(pool_name: impl Into<String>, provider_id: impl Into<String>) -> Self {
        let pool = PoolConfig::new(pool_name, provider_id);
        Self {
            machine: MachineConfig::new(pool.pool_name.clone()),
            pool,
            max_concurrent_reconciles: 16,
            relist_period: Duration::from_secs(1),
            event_resync_period: crate::events::DEFAULT_EVENT_RESYNC_PERIOD,
            reservations: true,
        }
    }
}

/// The machinepoollet.
pub struct MachinePoollet {
    store: Arc<dyn Store>,
    channel: Channel,
    config: Config,
}

impl MachinePoollet {
    /// A poollet for `config.pool.pool_name` talking to the runtime over `channel`.
    pub fn new(store: Arc<dyn Store>, channel: Channel, config: Config) -> Self {
        Self {
            store,
            channel,
            config,
        }
    }

    /// Starts up (Version, a first Status, the MachinePool), then runs every component until
    /// `token` is cancelled and in-flight reconciles have finished. Startup failures are
    /// returned (IronCore's poollet exits on them too).
    pub async fn run(self, token: CancellationToken) -> Result<()> {
        let Config {
            pool: pool_config,
            machine: machine_config,
            max_concurrent_reconciles,
            relist_period,
            event_resync_period,
            reservations,
        } = self.config;
        pool_config
            .validate()
            .map_err(|reason| Error::BadResponse(format!("invalid config: {reason}")))?;
        // An unfiltered ListMachines (or ListEvents) of 10,000 machines exceeds tonic's 4 MiB
        // default; the relist must not fail on a big pool.
        let client = MachineFlavor::client(self.channel.clone());
        let runtime_name =
            connect::<MachineFlavor>(&client, pool_config.status_timeout, &pool_config.pool_name)
                .await?;
        let view = RuntimeView::default();
        probe_once::<MachineFlavor>(&client, pool_config.status_timeout, &view).await;
        let machine_cache = ObjectCache::new();
        let class_cache = ObjectCache::new();
        let pool_reconciler = Arc::new(
            MachinePoolReconciler::new(self.store.clone(), pool_config.clone(), view.clone())
                .with_cache(machine_cache.clone()),
        );
        pool_reconciler.ensure_pool().await?;
        let pool_key = pool_reconciler.key();
        let reservation_queue: WorkQueue<ObjectRef> = WorkQueue::new();
        let reservation_reconciler = reservations.then(|| {
            Arc::new(ReservationReconciler::new(
                self.store.clone(),
                self.channel.clone(),
                ReservationConfig {
                    pool_name: pool_config.pool_name.clone(),
                    rpc_timeout: machine_config.rpc_timeout,
                    relist_period,
                },
                ObjectCache::new(),
            ))
        });
        let mut machine_reconciler = MachineReconciler::new(
            self.store.clone(),
            client.clone(),
            runtime_name,
            view.clone(),
            machine_config,
        )
        .with_caches(machine_cache.clone(), class_cache.clone());
        if let Some(r) = &reservation_reconciler {
            machine_reconciler =
                machine_reconciler.with_reservations(r.clone(), reservation_queue.clone());
        }
        let machine_reconciler = Arc::new(machine_reconciler);

        let pool_queue: WorkQueue<ObjectRef> = WorkQueue::new();
        let machine_queue: WorkQueue<ObjectRef> = WorkQueue::new();
        pool_queue.add(pool_key.clone());

        let mut tasks = Tasks::new(self.store.clone(), token.clone());
        tasks.controller("machinepool", 1, &pool_queue, pool_reconciler);
        tasks.controller(
            "machine",
            max_concurrent_reconciles,
            &machine_queue,
            machine_reconciler.clone(),
        );
        let lease = PoolLease::new(
            self.store.clone(),
            pool_config.pool_name.clone(),
            pool_config.lease_duration,
        );
        info!(holder = %lease.holder(), "machine pool lease holder");
        let enqueue_pool = {
            let queue = pool_queue.clone();
            let key = pool_key.clone();
            move || queue.add(key.clone())
        };
        tasks.spawn(heartbeat::<MachineFlavor>(
            client.clone(),
            pool_config.heartbeat_interval,
            pool_config.status_timeout,
            view,
            Some(lease),
            {
                let enqueue_pool = enqueue_pool.clone();
                move |_| enqueue_pool()
            },
            token.clone(),
        ));
        tasks.watch(
            Kind::Machine,
            ListOptions::all().field("spec.machinePoolRef.name", &pool_config.pool_name),
            machine_cache.clone(),
            {
                let machine_queue = machine_queue.clone();
                let machine_reconciler = machine_reconciler.clone();
                move |obj| {
                    if !machine_reconciler.is_own_write(obj) {
                        machine_queue.add(ObjectRef::of(obj));
                    }
                    // Batch the pool recount: one reconcile per window however many machines
                    // changed (the queue keeps the earliest deadline).
                    pool_queue.add_after(pool_key.clone(), POOL_RECOUNT_DELAY);
                }
            },
        );
        tasks.watch(Kind::MachineClass, ListOptions::all(), class_cache, {
            let machine_queue = machine_queue.clone();
            let machine_cache = machine_cache.clone();
            move |_| {
                enqueue_pool();
                // Machines waiting for their class get another chance.
                machine_queue.add_matching(&machine_cache, awaits_creation);
            }
        });
        tasks.watch(Kind::Secret, ListOptions::all(), ObjectCache::new(), {
            let machine_queue = machine_queue.clone();
            let machine_cache = machine_cache.clone();
            move |secret| {
                // Machines waiting for this ignition Secret, and machines with storage volumes
                // in its namespace (access and encryption Secrets), get another chance.
                let meta = secret.metadata();
                machine_queue.add_matching(&machine_cache, |m| {
                    awaits_secret(m, &meta.namespace, &meta.name)
                        || matches!(m, irikit_api::Object::Machine(m)
                            if m.metadata.namespace == meta.namespace
                                && volumes::has_storage_volumes(m))
                });
            }
        });
        // Storage Volumes: the Machines that reference them (claims, availability, resize).
        tasks.watch(Kind::Volume, ListOptions::all(), ObjectCache::new(), {
            let machine_queue = machine_queue.clone();
            let machine_cache = machine_cache.clone();
            move |volume| {
                let meta = volume.metadata();
                machine_queue.add_matching(&machine_cache, |m| {
                    matches!(m, irikit_api::Object::Machine(m)
                        if volumes::references_volume(m, &meta.namespace, &meta.name))
                });
            }
        });
        if let Some(reconciler) = reservation_reconciler {
            spawn_reservations(
                &mut tasks,
                reconciler,
                reservation_queue,
                &pool_config.pool_name,
            );
        }
        tasks.spawn(event_mapper::<MachineFlavor>(
            self.store.clone(),
            client.clone(),
            event_resync_period,
            pool_config.status_timeout,
            token.clone(),
        ));
        tasks.spawn(runtime_relist(
            client,
            relist_period,
            pool_config.status_timeout,
            {
                let machine_queue = machine_queue.clone();
                move |key, id: &str| {
                    machine_reconciler.observe_runtime(&key, id);
                    machine_queue.add(key);
                }
            },
            token,
        ));
        tasks.join().await;
        info!("machinepoollet stopped");
        Ok(())
    }
}

/// The reservation pass-through: the Reservation watch (its own cache), the reconciler and
/// the runtime relist.
fn spawn_reservations(
    tasks: &mut Tasks,
    reconciler: Arc<ReservationReconciler>,
    queue: WorkQueue<ObjectRef>,
    pool: &str,
) {
    tasks.watch(Kind::Reservation, ListOptions::all(), reconciler.cache(), {
        let queue = queue.clone();
        let pool = pool.to_owned();
        let reconciler = reconciler.clone();
        // A Reservation that asks this pool, or one it holds for that no longer does.
        move |obj| {
            if asks_pool(obj, &pool) || reconciler.holds_for(&obj.metadata().uid) {
                queue.add(ObjectRef::of(obj));
            }
        }
    });
    tasks.controller(
        "reservation",
        RESERVATION_CONCURRENCY,
        &queue,
        reconciler.clone(),
    );
    tasks.spawn(reservation_relist(reconciler, queue, tasks.token()));
}

/// Reservations passed to the runtime at once. CreateReservation answers once the runtime has
/// decided, and a broker decides only when its lower pools have (one round trip per lower
/// pool asked): with 16, a burst of Reservations queued behind the first 16 for seconds
/// (`reservation-bench`, 200 Machines).
const RESERVATION_CONCURRENCY: usize = 64;

/// Whether `obj` is a Machine without a runtime machine yet (no machineID).
fn awaits_creation(obj: &irikit_api::Object) -> bool {
    matches!(obj, irikit_api::Object::Machine(m) if m.status.machine_id.is_empty())
}

/// Whether `obj` is a Machine without a runtime machine whose ignition Secret is `namespace/name`.
fn awaits_secret(obj: &irikit_api::Object, namespace: &str, name: &str) -> bool {
    matches!(obj, irikit_api::Object::Machine(m)
        if m.status.machine_id.is_empty()
            && m.metadata.namespace == namespace
            && m.spec.ignition_ref.as_ref().is_some_and(|r| r.name == name))
}
