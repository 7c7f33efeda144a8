//! The pool-liveness controller, the control-plane side of pool liveness (reference §4.4, IronCore's
//! `MachinePoolLifecycleReconciler`): a pool whose Ready condition has not changed for longer
//! than the grace period is marked `Ready=Unknown` (reason `MachinePoolStatusUnknown`).
//!
//! Like IronCore, it never compares timestamps with the clock (clock skew between hosts): it
//! remembers what it last saw of the pool's Lease (`ironcore-machinepool-lease/<pool>`, its
//! renewTime, which the machinepoollet renews with every heartbeat) and of the Ready condition
//! (status, observedGeneration and lastUpdateTime, which the heartbeat advances too), and when
//! it saw any of them change, on its own monotonic clock. A poollet that renews its Lease but
//! cannot write the pool status, or one that writes status without a Lease, is alive.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use irikit_api::{
    Kind, ListOptions, Resource, Store, StoreExt,
    compute::MachinePool,
    coordination::{Lease, MACHINE_POOL_LEASE_NAMESPACE},
    meta::Condition,
    store,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use poollet::{
    controller::{self, Action, ControllerConfig, ObjectCache, ObjectRef, Reconciler, WorkQueue},
    pool::set_condition,
};

/// Reason of the Ready condition of a silent pool.
pub const REASON_STATUS_UNKNOWN: &str = "MachinePoolStatusUnknown";
/// Message of the Ready condition of a silent pool.
pub const MESSAGE_STATUS_UNKNOWN: &str = "machinepoollet stopped posting machine pool status.";
/// IronCore's default grace period (`--machine-pool-lifecycle-grace-period`).
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(50);

type Fingerprint = (String, i64, Option<String>, Option<String>);

fn fingerprint(ready: &Condition, lease: Option<&Lease>) -> Fingerprint {
    (
        ready.status.clone(),
        ready.observed_generation,
        ready.last_update_time.clone(),
        lease.and_then(|l| l.spec.renew_time.clone()),
    )
}

/// Marks silent machine pools `Ready=Unknown`.
pub struct PoolLifecycleReconciler {
    store: Arc<dyn Store>,
    grace_period: Duration,
    seen: Mutex<HashMap<String, (Fingerprint, Instant)>>,
}

impl PoolLifecycleReconciler {
    /// A reconciler with `grace_period`.
    pub fn new(store: Arc<dyn Store>, grace_period: Duration) -> Self {
        Self {
            store,
            grace_period,
            seen: Mutex::default(),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler<ObjectRef> for PoolLifecycleReconciler {
    type Error = store::Error;

    async fn reconcile(&self, key: &ObjectRef) -> Result<Action, store::Error> {
        let pool = match self.store.get_typed::<MachinePool>("", &key.name).await {
            Ok(pool) => pool,
            Err(store::Error::NotFound { .. }) => {
                self.seen
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&key.name);
                return Ok(Action::await_change());
            }
            Err(err) => return Err(err),
        };
        let Some(ready) = pool.status.conditions.iter().find(|c| c.type_ == "Ready") else {
            // Not announced by a poollet yet: nothing to age.
            return Ok(Action::await_change());
        };
        if ready.status == "Unknown" && ready.reason == REASON_STATUS_UNKNOWN {
            return Ok(Action::await_change());
        }
        let lease = match self
            .store
            .get_typed::<Lease>(MACHINE_POOL_LEASE_NAMESPACE, &key.name)
            .await
        {
            Ok(lease) => Some(lease),
            Err(store::Error::NotFound { .. }) => None,
            Err(err) => return Err(err),
        };
        let now = Instant::now();
        let current = fingerprint(ready, lease.as_ref());
        let since = {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            match seen.get(&key.name) {
                Some((last, since)) if *last == current => *since,
                _ => {
                    seen.insert(key.name.clone(), (current, now));
                    now
                }
            }
        };
        let silent_for = now.duration_since(since);
        if silent_for < self.grace_period {
            return Ok(Action::requeue(self.grace_period - silent_for));
        }
        let mut updated = pool.clone();
        set_condition(
            &mut updated.status.conditions,
            Condition {
                type_: "Ready".into(),
                status: "Unknown".into(),
                reason: REASON_STATUS_UNKNOWN.into(),
                message: MESSAGE_STATUS_UNKNOWN.into(),
                observed_generation: pool.metadata.generation,
                last_update_time: Some(store::now_rfc3339()),
                last_transition_time: None,
            },
        );
        self.store.update_status(updated.into_object()).await?;
        info!(pool = %key.name, silent_for = ?silent_for, "machine pool status unknown");
        Ok(Action::await_change())
    }
}

/// Runs the lifecycle controller over every MachinePool (and their Leases) until `token` is
/// cancelled.
pub async fn run(store: Arc<dyn Store>, grace_period: Duration, token: CancellationToken) {
    let queue: WorkQueue<ObjectRef> = WorkQueue::new();
    let reconciler = Arc::new(PoolLifecycleReconciler::new(store.clone(), grace_period));
    let leases = tokio::spawn(controller::watch(
        store.clone(),
        Kind::Lease,
        ListOptions::all().in_namespace(MACHINE_POOL_LEASE_NAMESPACE),
        ObjectCache::new(),
        {
            let queue = queue.clone();
            move |obj| queue.add(ObjectRef::new("", obj.metadata().name.clone()))
        },
        token.clone(),
    ));
    let watcher = tokio::spawn(controller::watch(
        store,
        Kind::MachinePool,
        ListOptions::all(),
        ObjectCache::new(),
        {
            let queue = queue.clone();
            move |obj| queue.add(ObjectRef::of(obj))
        },
        token.clone(),
    ));
    controller::run(
        queue,
        reconciler,
        ControllerConfig {
            name: "machinepoollifecycle",
            concurrency: 4,
        },
        token,
    )
    .await;
    watcher.await.ok();
    leases.await.ok();
}

#[cfg(test)]
mod tests {
    use irikit_api::{meta::ObjectMeta, store::memory::MemoryStore};

    use super::*;

    fn ready(at: &str) -> Condition {
        Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "HeartbeatReceived".into(),
            last_update_time: Some(at.into()),
            ..Condition::default()
        }
    }

    async fn post(store: &Arc<dyn Store>, at: &str) {
        let mut pool: MachinePool = store.get_typed("", "p").await.unwrap();
        set_condition(&mut pool.status.conditions, ready(at));
        store.update_status(pool.into_object()).await.unwrap();
    }

    async fn ready_of(store: &Arc<dyn Store>) -> (String, String) {
        let pool: MachinePool = store.get_typed("", "p").await.unwrap();
        let c = pool
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .clone();
        (c.status, c.reason)
    }

    async fn renew(store: &Arc<dyn Store>, at: &str) {
        use irikit_api::coordination::LeaseSpec;
        let spec = LeaseSpec {
            holder_identity: Some("p_1".into()),
            renew_time: Some(at.into()),
            ..LeaseSpec::default()
        };
        match store
            .get_typed::<Lease>(MACHINE_POOL_LEASE_NAMESPACE, "p")
            .await
        {
            Ok(mut lease) => {
                lease.spec = spec;
                store.update_typed(lease).await.unwrap();
            }
            Err(_) => {
                store
                    .create_typed(Lease {
                        metadata: ObjectMeta::namespaced(MACHINE_POOL_LEASE_NAMESPACE, "p"),
                        spec,
                        ..Lease::default()
                    })
                    .await
                    .unwrap();
            }
        }
    }

    async fn new_pool(store: &Arc<dyn Store>) {
        store
            .create_typed(MachinePool {
                metadata: ObjectMeta::named("p"),
                ..MachinePool::default()
            })
            .await
            .unwrap();
    }

    #[derive(Clone, Copy)]
    enum Beat {
        /// A new Ready condition lastUpdateTime.
        Ready,
        /// A new Lease renewTime.
        Lease,
    }

    /// Five beats 30 s apart keep the pool Ready; 51 s after the last one (past the grace
    /// period) it is Unknown.
    async fn beats_then_silence(store: &Arc<dyn Store>, beat: Beat) {
        let second = Duration::from_secs(1);
        for n in 1..=5 {
            tokio::time::sleep(30 * second).await;
            match beat {
                Beat::Ready => post(store, &format!("t{n}")).await,
                Beat::Lease => renew(store, &format!("r{n}")).await,
            }
        }
        tokio::time::sleep(40 * second).await;
        assert_eq!(
            ready_of(store).await,
            ("True".into(), "HeartbeatReceived".into())
        );
        tokio::time::sleep(11 * second).await;
        assert_eq!(
            ready_of(store).await,
            ("Unknown".into(), REASON_STATUS_UNKNOWN.into())
        );
    }

    /// A pool with a Ready condition ("t0") and a Lease ("r0"), and the lifecycle controller.
    async fn leased_pool() -> (
        Arc<dyn Store>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        new_pool(&store).await;
        post(&store, "t0").await;
        renew(&store, "r0").await;
        let token = CancellationToken::new();
        let task = tokio::spawn(run(store.clone(), DEFAULT_GRACE_PERIOD, token.clone()));
        (store, token, task)
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewed_lease_keeps_a_pool_with_an_unchanged_ready_condition_alive() {
        // The Ready condition never changes, but the Lease is renewed: alive; then the Lease
        // stops too.
        let (store, token, task) = leased_pool().await;
        beats_then_silence(&store, Beat::Lease).await;
        token.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_renewed_with_the_same_time_does_not_count() {
        // Only a changed renewTime is a sign of life; a write that keeps it is not.
        let (store, token, task) = leased_pool().await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        renew(&store, "r0").await;
        tokio::time::sleep(Duration::from_secs(21)).await;
        assert_eq!(
            ready_of(&store).await,
            ("Unknown".into(), REASON_STATUS_UNKNOWN.into())
        );
        token.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn silent_pools_turn_unknown_after_the_grace_period() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        new_pool(&store).await;
        post(&store, "t0").await;
        let token = CancellationToken::new();
        let task = tokio::spawn(run(store.clone(), DEFAULT_GRACE_PERIOD, token.clone()));
        let second = Duration::from_secs(1);
        // A live poollet keeps posting: never Unknown; then it falls silent.
        beats_then_silence(&store, Beat::Ready).await;
        // It comes back.
        post(&store, "t9").await;
        tokio::time::sleep(second).await;
        assert_eq!(
            ready_of(&store).await,
            ("True".into(), "HeartbeatReceived".into())
        );
        token.cancel();
        task.await.unwrap();
    }
}
