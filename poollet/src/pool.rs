//! Machine pool announcement (reference §4.1, §4.3, §4.4): the MachinePool object with its
//! providerID and topology labels, its classes, capacity and allocatable from the runtime's
//! `Status`, and the Ready condition from a heartbeat `Status` probe with a timeout.
//!
//! Unlike the Go machinepoollet, the heartbeat's Status result is used (§8.6): every probe
//! refreshes the class cache, so capacity changes reach the pool within one heartbeat interval
//! instead of the hourly class-mapper relist. After every probe the heartbeat renews the pool's
//! Lease ([`crate::lease`]); the Ready condition's `lastUpdateTime` advances with every probe
//! too.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use iri_spec::{
    keys,
    machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient},
};
use irikit_api::{
    ListOptions, Object, Quantity, Resource, ResourceList, Store, StoreExt,
    compute::{self, Machine, MachineClass, MachinePool},
    meta::{Condition, LocalObjectReference, ObjectMeta},
    quantity::Format,
    store::{self, now_rfc3339},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::{
    controller::{Action, ObjectCache, ObjectRef, Reconciler},
    error::{ClassMapError, Error, Result, rpc},
    lease::PoolLease,
};

/// `Ready` condition reason after a successful probe.
pub const REASON_HEARTBEAT_RECEIVED: &str = "HeartbeatReceived";
/// `Ready` condition reason after a failed probe.
pub const REASON_RUNTIME_UNREACHABLE: &str = "RuntimeUnreachable";
/// `Ready` condition message after a successful probe.
pub const MESSAGE_PROBE_SUCCEEDED: &str = "machine runtime status probe succeeded";

/// What the pool announcer needs to know.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The MachinePool name.
    pub pool_name: String,
    /// `MachinePool.spec.providerID`.
    pub provider_id: String,
    /// Value of `topology.ironcore.dev/region` (empty = no label).
    pub topology_region: String,
    /// Value of `topology.ironcore.dev/zone` (empty = no label).
    pub topology_zone: String,
    /// Interval between heartbeat Status probes.
    pub heartbeat_interval: Duration,
    /// Timeout of one heartbeat Status probe (and of other runtime RPCs).
    pub status_timeout: Duration,
    /// Resync interval of the pool status even without events.
    pub resync: Duration,
    /// `leaseDurationSeconds` of the pool Lease (`--heartbeat-lease-duration`).
    pub lease_duration: Duration,
}

impl PoolConfig {
    /// A config with IronCore's defaults (heartbeat 10 s, timeout 5 s) and no topology.
    pub fn new(pool_name: impl Into<String>, provider_id: impl Into<String>) -> Self {
        Self {
            pool_name: pool_name.into(),
            provider_id: provider_id.into(),
            topology_region: String::new(),
            topology_zone: String::new(),
            heartbeat_interval: Duration::from_secs(10),
            status_timeout: Duration::from_secs(5),
            resync: Duration::from_secs(60),
            lease_duration: crate::lease::DEFAULT_LEASE_DURATION,
        }
    }

    /// The labels the pool carries (topology).
    pub fn labels(&self) -> BTreeMap<String, String> {
        topology_labels(&self.topology_region, &self.topology_zone)
    }

    /// Checks IronCore's flag rules: interval > 0, lease duration > interval and
    /// 0 < timeout < interval.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.pool_name.is_empty() {
            return Err("the machine pool name must not be empty".into());
        }
        if self.heartbeat_interval.is_zero() {
            return Err("the heartbeat interval must be positive".into());
        }
        if self.lease_duration <= self.heartbeat_interval {
            return Err("the lease duration must be longer than the heartbeat interval".into());
        }
        if self.status_timeout.is_zero() || self.status_timeout >= self.heartbeat_interval {
            return Err(
                "the status timeout must be positive and below the heartbeat interval".into(),
            );
        }
        Ok(())
    }
}

/// The `topology.ironcore.dev/{region,zone}` labels of a pool (empty values are left out).
pub fn topology_labels(region: &str, zone: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    if !region.is_empty() {
        labels.insert(keys::TOPOLOGY_REGION_LABEL.to_string(), region.to_string());
    }
    if !zone.is_empty() {
        labels.insert(keys::TOPOLOGY_ZONE_LABEL.to_string(), zone.to_string());
    }
    labels
}

/// The outcome of the last heartbeat probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `Err(message)` when the runtime did not answer Status.
    pub result: std::result::Result<(), String>,
    /// When the probe finished (RFC 3339).
    pub at: String,
}

#[derive(Debug, Default)]
struct ViewInner {
    classes: Option<Vec<machine::MachineClassStatus>>,
    probe: Option<Probe>,
}

/// The runtime as last seen by the heartbeat: its classes and the probe result. Shared by the
/// pool and machine reconcilers (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct RuntimeView {
    inner: Arc<RwLock<ViewInner>>,
}

impl RuntimeView {
    /// The runtime classes of the last successful Status (`None` before the first one).
    pub fn classes(&self) -> Option<Vec<machine::MachineClassStatus>> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .classes
            .clone()
    }

    /// The last probe.
    pub fn probe(&self) -> Option<Probe> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .probe
            .clone()
    }

    /// Records a probe (and, on success, the classes it returned).
    pub fn record(&self, result: std::result::Result<Vec<machine::MachineClassStatus>, String>) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let result = match result {
            Ok(classes) => {
                inner.classes = Some(classes);
                Ok(())
            }
            Err(message) => Err(message),
        };
        inner.probe = Some(Probe {
            result,
            at: now_rfc3339(),
        });
    }
}

/// Calls Status once with `timeout` and records the result in `view`.
pub async fn probe_once(
    client: &mut MachineRuntimeClient<Channel>,
    timeout: Duration,
    view: &RuntimeView,
) {
    let result = rpc("Status", timeout, client.status(machine::StatusRequest {}))
        .await
        .map(|status| status.machine_class_status)
        .map_err(|err| err.to_string());
    if let Err(message) = &result {
        warn!(error = %message, "runtime status probe failed");
    }
    view.record(result);
}

/// Probes the runtime now and then every `interval` until `token` is cancelled; after each
/// probe, whether or not it worked, renews `lease` (if any), then calls `on_probe` (to enqueue
/// the pool).
pub async fn heartbeat(
    mut client: MachineRuntimeClient<Channel>,
    interval: Duration,
    timeout: Duration,
    view: RuntimeView,
    lease: Option<PoolLease>,
    on_probe: impl Fn() + Send,
    token: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = ticker.tick() => {}
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = probe_once(&mut client, timeout, &view) => {}
        }
        if let Some(lease) = &lease {
            tokio::select! {
                () = token.cancelled() => return,
                res = lease.renew() => if let Err(err) = res {
                    warn!(error = %err, "renewing the machine pool lease failed");
                },
            }
        }
        on_probe();
    }
}

/// The capabilities of an ironcore class as IRI resources (`Quantity::value()`, so cpu in
/// whole cores rounded up and memory in bytes).
pub fn capabilities_of(class: &MachineClass) -> BTreeMap<String, i64> {
    class
        .capabilities
        .iter()
        .map(|(name, quantity)| {
            let value = i64::try_from(quantity.value()).unwrap_or(i64::MAX);
            (name.clone(), value)
        })
        .collect()
}

fn resources_of(class: &machine::MachineClassStatus) -> BTreeMap<String, i64> {
    class
        .machine_class
        .as_ref()
        .and_then(|c| c.capabilities.as_ref())
        .map(|caps| {
            caps.resources
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        })
        .unwrap_or_default()
}

fn name_of(class: &machine::MachineClassStatus) -> &str {
    class.machine_class.as_ref().map_or("", |c| c.name.as_str())
}

/// IronCore's class mapping (§4.3): the runtime class with the same name and equal
/// capabilities, else the unique runtime class with equal capabilities. Empty capabilities
/// never match by capabilities alone.
pub fn map_class<'a>(
    name: &str,
    capabilities: &BTreeMap<String, i64>,
    runtime_classes: &'a [machine::MachineClassStatus],
) -> std::result::Result<&'a machine::MachineClassStatus, ClassMapError> {
    if let Some(same) = runtime_classes
        .iter()
        .find(|c| name_of(c) == name && resources_of(c) == *capabilities)
    {
        return Ok(same);
    }
    if capabilities.is_empty() {
        return Err(ClassMapError::NoMatch);
    }
    let matches: Vec<&machine::MachineClassStatus> = runtime_classes
        .iter()
        .filter(|c| resources_of(c) == *capabilities)
        .collect();
    match matches.as_slice() {
        [] => Err(ClassMapError::NoMatch),
        [one] => Ok(one),
        many => Err(ClassMapError::Ambiguous(
            many.iter().map(|c| name_of(c).to_string()).collect(),
        )),
    }
}

/// The announced part of a pool status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Announcement {
    /// ironcore classes that map to a runtime class, by name.
    pub available_machine_classes: Vec<LocalObjectReference>,
    /// `class/machine.<name>` → runtime quantity.
    pub capacity: ResourceList,
    /// Capacity minus the machines bound to the pool with that class, floored at 0.
    pub allocatable: ResourceList,
}

/// What the pool count needs of one Machine bound to the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundMachine {
    /// `metadata.uid` (a machine counts once however often it is listed).
    pub uid: String,
    /// `spec.machineClassRef.name`.
    pub class: String,
}

impl BoundMachine {
    /// The count-relevant part of `m`.
    pub fn of(m: &Machine) -> Self {
        Self {
            uid: m.metadata.uid.clone(),
            class: m.spec.machine_class_ref.name.clone(),
        }
    }
}

/// Computes classes, capacity and allocatable (§4.3). Each machine (by uid) counts once;
/// machines being deleted still count.
pub fn announce(
    runtime_classes: &[machine::MachineClassStatus],
    classes: &[MachineClass],
    machines: &[BoundMachine],
) -> Announcement {
    let mut out = Announcement::default();
    for class in classes {
        let name = &class.metadata.name;
        let Ok(runtime_class) = map_class(name, &capabilities_of(class), runtime_classes) else {
            continue;
        };
        out.available_machine_classes
            .push(LocalObjectReference::new(name.clone()));
        out.capacity.insert(
            compute::class_resource(name),
            Quantity::from_int(runtime_class.quantity.max(0), Format::DecimalSI),
        );
    }
    let mut used: BTreeMap<String, i64> = BTreeMap::new();
    let mut seen = HashSet::new();
    for machine in machines {
        let uid = machine.uid.as_str();
        if !uid.is_empty() && !seen.insert(uid) {
            continue;
        }
        *used
            .entry(compute::class_resource(&machine.class))
            .or_default() += 1;
    }
    for (key, capacity) in &out.capacity {
        let n_used = used.get(key).copied().unwrap_or(0);
        let free = (capacity.value() - i128::from(n_used)).max(0);
        let free = i64::try_from(free).unwrap_or(i64::MAX);
        out.allocatable
            .insert(key.clone(), Quantity::from_int(free, Format::DecimalSI));
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

/// Reconciles the MachinePool: ensures the object (providerID, topology labels) and writes its
/// status from the [`RuntimeView`] and the machines bound to it.
pub struct PoolReconciler {
    store: Arc<dyn Store>,
    config: PoolConfig,
    view: RuntimeView,
    machines: Option<ObjectCache>,
}

impl PoolReconciler {
    /// A reconciler for `config.pool_name`.
    pub fn new(store: Arc<dyn Store>, config: PoolConfig, view: RuntimeView) -> Self {
        Self {
            store,
            config,
            view,
            machines: None,
        }
    }

    /// Counts the pool's machines from `cache` (kept by a watch of the pool's Machines) once it
    /// is synced, instead of listing them from the store at every reconcile.
    pub fn with_machine_cache(mut self, cache: ObjectCache) -> Self {
        self.machines = Some(cache);
        self
    }

    async fn machines(&self) -> Result<Vec<BoundMachine>> {
        let of_pool = |m: &Machine| {
            m.spec
                .machine_pool_ref
                .as_ref()
                .is_some_and(|r| r.name == self.config.pool_name)
        };
        if let Some(cache) = self.machines.as_ref().filter(|c| c.is_synced()) {
            // Under the cache's read lock, copying two strings a machine (a recount runs
            // every POOL_RECOUNT_DELAY during a rollout; cloning whole Machines showed up).
            return Ok(cache.filter_map(|obj| match obj {
                Object::Machine(m) if of_pool(m) => Some(BoundMachine::of(m)),
                _ => None,
            }));
        }
        let (machines, _) = self
            .store
            .list_typed::<Machine>(
                &ListOptions::all().field("spec.machinePoolRef.name", &self.config.pool_name),
            )
            .await?;
        Ok(machines.iter().map(BoundMachine::of).collect())
    }

    /// The queue key of the pool.
    pub fn key(&self) -> ObjectRef {
        ObjectRef::new("", self.config.pool_name.clone())
    }

    /// Creates the pool or updates its providerID and topology labels.
    pub async fn ensure_pool(&self) -> Result<MachinePool> {
        ensure_pool_object(
            self.store.as_ref(),
            &self.config.pool_name,
            self.config.labels(),
            &self.config.provider_id,
            |pool: &mut MachinePool| &mut pool.spec.provider_id,
        )
        .await
    }
}

/// Creates the cluster-scoped pool object `name` (a MachinePool or VolumePool) with
/// `provider_id` and `labels`, or updates an existing one whose providerID or labels differ.
pub(crate) async fn ensure_pool_object<R: Resource + Default>(
    store: &dyn Store,
    name: &str,
    labels: BTreeMap<String, String>,
    provider_id: &str,
    provider_id_of: impl Fn(&mut R) -> &mut String,
) -> Result<R> {
    match store.get_typed::<R>("", name).await {
        Ok(mut pool) => {
            let labels_ok = labels
                .iter()
                .all(|(k, v)| pool.meta().labels.get(k) == Some(v));
            if labels_ok && provider_id_of(&mut pool) == provider_id {
                return Ok(pool);
            }
            pool.meta_mut().labels.extend(labels);
            *provider_id_of(&mut pool) = provider_id.to_string();
            Ok(store.update_typed(pool).await?)
        }
        Err(store::Error::NotFound { .. }) => {
            let mut pool = R::default();
            *pool.meta_mut() = ObjectMeta {
                labels,
                ..ObjectMeta::named(name)
            };
            *provider_id_of(&mut pool) = provider_id.to_string();
            let pool = store.create_typed(pool).await?;
            info!(pool = %name, kind = %R::KIND, "{} pool created", pool_noun(R::KIND));
            Ok(pool)
        }
        Err(err) => Err(err.into()),
    }
}

fn pool_noun(kind: irikit_api::Kind) -> &'static str {
    match kind {
        irikit_api::Kind::VolumePool => "volume",
        _ => "machine",
    }
}

#[async_trait::async_trait]
impl Reconciler<ObjectRef> for PoolReconciler {
    type Error = Error;

    async fn reconcile(&self, _key: &ObjectRef) -> Result<Action> {
        let pool = self.ensure_pool().await?;
        let (classes, _) = self
            .store
            .list_typed::<MachineClass>(&ListOptions::all())
            .await?;
        let machines = self.machines().await?;
        let mut status = pool.status.clone();
        if let Some(runtime_classes) = self.view.classes() {
            let announced = announce(&runtime_classes, &classes, &machines);
            status.available_machine_classes = announced.available_machine_classes;
            status.capacity = announced.capacity;
            status.allocatable = announced.allocatable;
        }
        status.state = "Ready".into();
        if let Some(probe) = self.view.probe() {
            set_condition(
                &mut status.conditions,
                ready_condition(&probe, pool.metadata.generation),
            );
        }
        if status != pool.status {
            let mut updated = pool;
            updated.status = status;
            self.store.update_status(updated.into_object()).await?;
        }
        Ok(Action::requeue(self.config.resync))
    }
}

#[cfg(test)]
mod tests;
