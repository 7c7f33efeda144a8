//! The pool announcer of both poollets (reference §4.1–§4.4), one reconciler with a machine and
//! a volume [`Flavor`]: the pool object with its providerID and topology labels, its classes
//! (the ironcore classes that map to a runtime class), `capacity` from the runtime's `Status`
//! and `allocatable` = capacity minus what the pool's objects use (machines: one each;
//! volumes: their requested bytes), and, on a MachinePool, the `Ready` condition of the last
//! heartbeat probe.
//!
//! Unlike the Go poollets, every probe's Status result is used (§8.6): it refreshes the class
//! cache, so capacity changes reach the pool within one interval instead of the hourly
//! class-mapper relist. After every probe the machinepoollet's heartbeat renews the pool's
//! Lease ([`crate::lease`]); the Ready condition's `lastUpdateTime` advances with every probe
//! too. There is no VolumePool `Ready` condition (IronCore has none either, §8.12). IronCore's
//! VolumePool reconciler does not watch Volumes, so its allocatable lags behind binds; ours
//! does.
//!
//! The flavour specifics live in [`machine`] (heartbeat settings, machine class mapping) and
//! [`volume`] (volume class mapping by `(tps, iops)`).

use std::{
    collections::{BTreeMap, HashSet},
    marker::PhantomData,
    sync::Arc,
    time::Duration,
};

use iri_spec::{machine::v1alpha1 as iri_machine, volume::v1alpha1 as iri_volume};
use irikit_api::{
    ListOptions, Quantity, Resource, ResourceList, Store, StoreExt,
    meta::{Condition, LocalObjectReference, ObjectMeta},
    store::{self, now_rfc3339},
};
use tracing::info;

use crate::{
    controller::{Action, ObjectCache, ObjectRef, Reconciler},
    error::{Error, Result},
    flavor::{Flavor, MachineFlavor, Usage, VolumeFlavor},
};

pub mod machine;
pub mod volume;

pub use machine::{PoolConfig, capabilities_of, map_class, topology_labels};
pub use volume::{VolumePoolConfig, map_volume_class, requested_bytes, volume_class_key};

pub use crate::runtime::Probe;

/// The machine runtime as last seen by the heartbeat.
pub type RuntimeView = crate::runtime::RuntimeView<iri_machine::MachineClassStatus>;
/// The volume runtime as last seen by the Status probe.
pub type VolumeRuntimeView = crate::runtime::RuntimeView<iri_volume::VolumeClassStatus>;
/// The MachinePool reconciler.
pub type MachinePoolReconciler = PoolReconciler<MachineFlavor>;
/// The VolumePool reconciler.
pub type VolumePoolReconciler = PoolReconciler<VolumeFlavor>;

/// `Ready` condition reason after a successful probe.
pub const REASON_HEARTBEAT_RECEIVED: &str = "HeartbeatReceived";
/// `Ready` condition reason after a failed probe.
pub const REASON_RUNTIME_UNREACHABLE: &str = "RuntimeUnreachable";
/// `Ready` condition message after a successful probe.
pub const MESSAGE_PROBE_SUCCEEDED: &str = "machine runtime status probe succeeded";

/// The announced part of a pool status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Announcement {
    /// ironcore classes that map to a runtime class, by name.
    pub available_classes: Vec<LocalObjectReference>,
    /// `class/<kind>.<name>` → the runtime class's quantity.
    pub capacity: ResourceList,
    /// Capacity minus what the pool's objects of that class use, floored at 0.
    pub allocatable: ResourceList,
}

/// Computes classes, capacity and allocatable (§4.3). Each object (by uid) counts once;
/// objects being deleted still count.
pub fn announce<F: Flavor>(
    runtime_classes: &[F::RuntimeClass],
    classes: &[F::Class],
    usages: &[Usage],
) -> Announcement {
    let mut out = Announcement::default();
    for class in classes {
        let name = &class.meta().name;
        let Some(quantity) = F::mapped_quantity(class, runtime_classes) else {
            continue;
        };
        out.available_classes
            .push(LocalObjectReference::new(name.clone()));
        out.capacity.insert(
            F::class_resource(name),
            Quantity::from_int(quantity.max(0), F::FORMAT),
        );
    }
    let mut used: BTreeMap<String, i128> = BTreeMap::new();
    let mut seen = HashSet::new();
    for usage in usages {
        let uid = usage.uid.as_str();
        if !uid.is_empty() && !seen.insert(uid) {
            continue;
        }
        *used.entry(F::class_resource(&usage.class)).or_default() += usage.amount;
    }
    for (key, capacity) in &out.capacity {
        let free = (capacity.value() - used.get(key).copied().unwrap_or(0)).max(0);
        let free = i64::try_from(free).unwrap_or(i64::MAX);
        out.allocatable
            .insert(key.clone(), Quantity::from_int(free, F::FORMAT));
    }
    out
}

/// Sets condition `new` in `conditions`, keeping `lastTransitionTime` when the status did not
/// change.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            if new.last_transition_time.is_none() {
                new.last_transition_time =
                    new.last_update_time.clone().or_else(|| Some(now_rfc3339()));
            }
            *old = new;
        }
        None => {
            if new.last_transition_time.is_none() {
                new.last_transition_time =
                    new.last_update_time.clone().or_else(|| Some(now_rfc3339()));
            }
            conditions.push(new);
        }
    }
}

/// The pool's Ready condition for a probe result.
pub fn ready_condition(probe: &Probe, generation: i64) -> Condition {
    let (status, reason, message) = match &probe.result {
        Ok(()) => (
            "True",
            REASON_HEARTBEAT_RECEIVED,
            MESSAGE_PROBE_SUCCEEDED.to_string(),
        ),
        Err(message) => ("False", REASON_RUNTIME_UNREACHABLE, message.clone()),
    };
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_update_time: Some(probe.at.clone()),
        last_transition_time: None,
    }
}

/// Reconciles a pool: ensures the object (providerID, topology labels) and writes its status
/// from the [`crate::runtime::RuntimeView`] and the objects bound to it.
pub struct PoolReconciler<F: Flavor> {
    store: Arc<dyn Store>,
    pool_name: String,
    provider_id: String,
    labels: BTreeMap<String, String>,
    resync: Duration,
    view: crate::runtime::RuntimeView<F::RuntimeClass>,
    objects: Option<ObjectCache>,
    flavor: PhantomData<F>,
}

/// What the pool reconciler takes from a poollet's pool settings ([`PoolConfig`],
/// [`VolumePoolConfig`]).
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// The pool name.
    pub pool_name: String,
    /// `spec.providerID`.
    pub provider_id: String,
    /// The labels the pool carries (topology).
    pub labels: BTreeMap<String, String>,
    /// Resync interval of the pool status even without events.
    pub resync: Duration,
}

impl<F: Flavor> PoolReconciler<F> {
    /// A reconciler for the pool of `settings`.
    pub fn new(
        store: Arc<dyn Store>,
        settings: impl Into<PoolSettings>,
        view: crate::runtime::RuntimeView<F::RuntimeClass>,
    ) -> Self {
        let settings = settings.into();
        Self {
            store,
            pool_name: settings.pool_name,
            provider_id: settings.provider_id,
            labels: settings.labels,
            resync: settings.resync,
            view,
            objects: None,
            flavor: PhantomData,
        }
    }

    /// Counts the pool's objects from `cache` (kept by a watch of the pool's objects) once it
    /// is synced, instead of listing them from the store at every reconcile.
    pub fn with_cache(mut self, cache: ObjectCache) -> Self {
        self.objects = Some(cache);
        self
    }

    async fn usages(&self) -> Result<Vec<Usage>> {
        let pool = self.pool_name.as_str();
        if let Some(cache) = self.objects.as_ref().filter(|c| c.is_synced()) {
            // Under the cache's read lock, copying two strings an object (a recount runs
            // every POOL_RECOUNT_DELAY during a rollout; cloning whole objects showed up).
            return Ok(cache.filter_map(|obj| F::usage(obj, pool)));
        }
        let listed = self
            .store
            .list(
                F::OBJECT,
                &ListOptions::all().field(F::POOL_REF_FIELD, pool),
            )
            .await?;
        Ok(listed
            .items
            .iter()
            .filter_map(|obj| F::usage(obj, pool))
            .collect())
    }

    /// The queue key of the pool.
    pub fn key(&self) -> ObjectRef {
        ObjectRef::new("", self.pool_name.clone())
    }

    /// Creates the pool or updates its providerID and topology labels.
    pub async fn ensure_pool(&self) -> Result<F::Pool> {
        let store = self.store.as_ref();
        match store.get_typed::<F::Pool>("", &self.pool_name).await {
            Ok(mut pool) => {
                let labels_ok = self
                    .labels
                    .iter()
                    .all(|(k, v)| pool.meta().labels.get(k) == Some(v));
                if labels_ok && *F::provider_id(&mut pool) == self.provider_id {
                    return Ok(pool);
                }
                pool.meta_mut().labels.extend(self.labels.clone());
                *F::provider_id(&mut pool) = self.provider_id.clone();
                Ok(store.update_typed(pool).await?)
            }
            Err(store::Error::NotFound { .. }) => {
                let mut pool = F::Pool::default();
                *pool.meta_mut() = ObjectMeta {
                    labels: self.labels.clone(),
                    ..ObjectMeta::named(&self.pool_name)
                };
                *F::provider_id(&mut pool) = self.provider_id.clone();
                let pool = store.create_typed(pool).await?;
                info!(pool = %self.pool_name, kind = %<F::Pool as Resource>::KIND, "{} pool created", F::NAME);
                Ok(pool)
            }
            Err(err) => Err(err.into()),
        }
    }
}

#[async_trait::async_trait]
impl<F: Flavor> Reconciler<ObjectRef> for PoolReconciler<F> {
    type Error = Error;

    async fn reconcile(&self, _key: &ObjectRef) -> Result<Action> {
        let pool = self.ensure_pool().await?;
        let (classes, _) = self
            .store
            .list_typed::<F::Class>(&ListOptions::all())
            .await?;
        let usages = self.usages().await?;
        let generation = pool.meta().generation;
        let mut updated = pool.clone();
        let status = F::pool_status(&mut updated);
        if let Some(runtime_classes) = self.view.classes() {
            let announced = announce::<F>(&runtime_classes, &classes, &usages);
            *status.classes = announced.available_classes;
            *status.capacity = announced.capacity;
            *status.allocatable = announced.allocatable;
        }
        *status.state = F::POOL_STATE.into();
        if F::READY_CONDITION
            && let Some(probe) = self.view.probe()
        {
            set_condition(status.conditions, ready_condition(&probe, generation));
        }
        if updated != pool {
            self.store.update_status(updated.into_object()).await?;
        }
        Ok(Action::requeue(self.resync))
    }
}

impl From<PoolConfig> for PoolSettings {
    fn from(config: PoolConfig) -> Self {
        let labels = config.labels();
        Self {
            pool_name: config.pool_name,
            provider_id: config.provider_id,
            labels,
            resync: config.resync,
        }
    }
}

impl From<VolumePoolConfig> for PoolSettings {
    fn from(config: VolumePoolConfig) -> Self {
        Self {
            labels: topology_labels(&config.topology_region, &config.topology_zone),
            pool_name: config.pool_name,
            provider_id: config.provider_id,
            resync: config.resync,
        }
    }
}

#[cfg(test)]
mod tests;
