//! Volume pool announcement (reference §4.2, §4.3): the VolumePool object with its providerID
//! and topology labels, `availableVolumeClasses` through the volume class mapping, and
//! `capacity` / `allocatable` keyed `class/volume.<name>` in bytes (BinarySI).
//!
//! The runtime's `Status` is probed every interval (IronCore's vcm relists hourly, §8.6) and the
//! pool is recomputed after every probe and whenever a Volume of the pool changes. IronCore's
//! VolumePool reconciler does not watch Volumes, so its allocatable lags behind binds; ours
//! does. There is no VolumePool `Ready` condition (IronCore has none either, §8.12): the probe
//! result only refreshes the class cache, and a failed probe keeps the last classes.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use iri_spec::volume::v1alpha1::{self as volume, volume_runtime_client::VolumeRuntimeClient};
use irikit_api::{
    ListOptions, Quantity, Resource, ResourceList, Store, StoreExt,
    meta::LocalObjectReference,
    quantity::Format,
    storage::{self, Volume, VolumeClass, VolumePool},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::warn;

use crate::{
    controller::{Action, ObjectRef, Reconciler},
    error::{ClassMapError, Error, Result, rpc},
    pool::{ensure_pool_object, topology_labels},
};

/// What the volume pool announcer needs to know.
#[derive(Debug, Clone)]
pub struct VolumePoolConfig {
    /// The VolumePool name.
    pub pool_name: String,
    /// `VolumePool.spec.providerID`.
    pub provider_id: String,
    /// Value of `topology.ironcore.dev/region` (empty = no label).
    pub topology_region: String,
    /// Value of `topology.ironcore.dev/zone` (empty = no label).
    pub topology_zone: String,
    /// Interval between runtime `Status` probes (class and capacity refresh).
    pub status_interval: Duration,
    /// Timeout of one `Status` probe.
    pub status_timeout: Duration,
    /// Resync interval of the pool status even without events.
    pub resync: Duration,
}

impl VolumePoolConfig {
    /// A config with a 10 s status interval, a 5 s timeout and no topology.
    pub fn new(pool_name: impl Into<String>, provider_id: impl Into<String>) -> Self {
        Self {
            pool_name: pool_name.into(),
            provider_id: provider_id.into(),
            topology_region: String::new(),
            topology_zone: String::new(),
            status_interval: Duration::from_secs(10),
            status_timeout: Duration::from_secs(5),
            resync: Duration::from_secs(60),
        }
    }

    /// Checks the settings: a pool name and provider id, interval > 0, 0 < timeout < interval.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.pool_name.is_empty() {
            return Err("the volume pool name must not be empty".into());
        }
        if self.provider_id.is_empty() {
            return Err("the provider id must not be empty".into());
        }
        if self.status_interval.is_zero() {
            return Err("the status interval must be positive".into());
        }
        if self.status_timeout.is_zero() || self.status_timeout >= self.status_interval {
            return Err("the status timeout must be positive and below the status interval".into());
        }
        Ok(())
    }
}

/// The runtime's volume classes as last seen by a `Status` probe (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct VolumeRuntimeView {
    classes: Arc<RwLock<Option<Vec<volume::VolumeClassStatus>>>>,
}

impl VolumeRuntimeView {
    /// The classes of the last successful Status (`None` before the first one).
    pub fn classes(&self) -> Option<Vec<volume::VolumeClassStatus>> {
        self.classes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records the classes of a successful Status; returns whether they changed.
    pub fn record(&self, classes: Vec<volume::VolumeClassStatus>) -> bool {
        let mut current = self.classes.write().unwrap_or_else(PoisonError::into_inner);
        let changed = current.as_ref() != Some(&classes);
        *current = Some(classes);
        changed
    }
}

/// Calls `Status` once with `timeout` and records the classes; returns whether they changed.
/// A failure is logged and keeps the last classes.
pub async fn probe_volume_status(
    client: &mut VolumeRuntimeClient<Channel>,
    timeout: Duration,
    view: &VolumeRuntimeView,
) -> bool {
    match rpc("Status", timeout, client.status(volume::StatusRequest {})).await {
        Ok(status) => view.record(status.volume_class_status),
        Err(err) => {
            warn!(error = %err, "volume runtime status probe failed");
            false
        }
    }
}

/// Probes `Status` now and then every `interval` until `token` is cancelled, calling
/// `on_change` when the runtime's classes or quantities changed.
pub async fn status_loop(
    mut client: VolumeRuntimeClient<Channel>,
    interval: Duration,
    timeout: Duration,
    view: VolumeRuntimeView,
    on_change: impl Fn() + Send,
    token: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let changed = tokio::select! {
            () = token.cancelled() => return,
            changed = probe_volume_status(&mut client, timeout, &view) => changed,
        };
        if changed {
            on_change();
        }
    }
}

/// The `(tps, iops)` key of an ironcore VolumeClass (`Quantity::value()`; a missing capability
/// is 0).
pub fn volume_class_key(class: &VolumeClass) -> (i64, i64) {
    let get = |name: &str| {
        class
            .capabilities
            .get(name)
            .map_or(0, |q| i64::try_from(q.value()).unwrap_or(i64::MAX))
    };
    (get("tps"), get("iops"))
}

fn runtime_key(class: &volume::VolumeClassStatus) -> (i64, i64) {
    class
        .volume_class
        .as_ref()
        .and_then(|c| c.capabilities)
        .map_or((0, 0), |caps| (caps.tps, caps.iops))
}

fn runtime_name(class: &volume::VolumeClassStatus) -> &str {
    class.volume_class.as_ref().map_or("", |c| c.name.as_str())
}

/// IronCore's volume class mapping (§4.3): the runtime class with the same name and the same
/// `(tps, iops)`, else the unique runtime class with the same `(tps, iops)` (exact compare).
pub fn map_volume_class<'a>(
    name: &str,
    key: (i64, i64),
    runtime_classes: &'a [volume::VolumeClassStatus],
) -> std::result::Result<&'a volume::VolumeClassStatus, ClassMapError> {
    if let Some(same) = runtime_classes
        .iter()
        .find(|c| runtime_name(c) == name && runtime_key(c) == key)
    {
        return Ok(same);
    }
    let matches: Vec<&volume::VolumeClassStatus> = runtime_classes
        .iter()
        .filter(|c| runtime_key(c) == key)
        .collect();
    match matches.as_slice() {
        [] => Err(ClassMapError::NoMatch),
        [one] => Ok(one),
        many => Err(ClassMapError::Ambiguous(
            many.iter().map(|c| runtime_name(c).to_string()).collect(),
        )),
    }
}

/// The requested bytes of a Volume (`spec.resources.storage`, 0 when unset).
pub fn requested_bytes(v: &Volume) -> i64 {
    v.spec
        .resources
        .get("storage")
        .map_or(0, |q| i64::try_from(q.value().max(0)).unwrap_or(i64::MAX))
}

/// The announced part of a volume pool status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeAnnouncement {
    /// ironcore classes that map to a runtime class, by name.
    pub available_volume_classes: Vec<LocalObjectReference>,
    /// `class/volume.<name>` → the runtime class's bytes.
    pub capacity: ResourceList,
    /// Capacity minus the requested bytes of the pool's volumes of that class, floored at 0.
    pub allocatable: ResourceList,
}

/// Computes classes, capacity and allocatable of a volume pool. Each volume (by uid) counts
/// once; volumes being deleted still count.
pub fn announce_volumes(
    runtime_classes: &[volume::VolumeClassStatus],
    classes: &[VolumeClass],
    volumes: &[Volume],
) -> VolumeAnnouncement {
    let mut out = VolumeAnnouncement::default();
    for class in classes {
        let name = &class.metadata.name;
        let Ok(runtime_class) = map_volume_class(name, volume_class_key(class), runtime_classes)
        else {
            continue;
        };
        out.available_volume_classes
            .push(LocalObjectReference::new(name.clone()));
        out.capacity.insert(
            storage::class_resource(name),
            Quantity::from_int(runtime_class.quantity.max(0), Format::BinarySI),
        );
    }
    let mut used: BTreeMap<String, i128> = BTreeMap::new();
    let mut seen = HashSet::new();
    for v in volumes {
        let Some(class) = &v.spec.volume_class_ref else {
            continue;
        };
        if !v.metadata.uid.is_empty() && !seen.insert(v.metadata.uid.clone()) {
            continue;
        }
        *used
            .entry(storage::class_resource(&class.name))
            .or_default() += i128::from(requested_bytes(v));
    }
    for (key, capacity) in &out.capacity {
        let free = (capacity.value() - used.get(key).copied().unwrap_or(0)).max(0);
        let free = i64::try_from(free).unwrap_or(i64::MAX);
        out.allocatable
            .insert(key.clone(), Quantity::from_int(free, Format::BinarySI));
    }
    out
}

/// Reconciles the VolumePool: ensures the object (providerID, topology labels) and writes its
/// status from the [`VolumeRuntimeView`] and the volumes bound to it.
pub struct VolumePoolReconciler {
    store: Arc<dyn Store>,
    config: VolumePoolConfig,
    view: VolumeRuntimeView,
}

impl VolumePoolReconciler {
    /// A reconciler for `config.pool_name`.
    pub fn new(store: Arc<dyn Store>, config: VolumePoolConfig, view: VolumeRuntimeView) -> Self {
        Self {
            store,
            config,
            view,
        }
    }

    /// The queue key of the pool.
    pub fn key(&self) -> ObjectRef {
        ObjectRef::new("", self.config.pool_name.clone())
    }

    /// Creates the pool or updates its providerID and topology labels.
    pub async fn ensure_pool(&self) -> Result<VolumePool> {
        ensure_pool_object(
            self.store.as_ref(),
            &self.config.pool_name,
            topology_labels(&self.config.topology_region, &self.config.topology_zone),
            &self.config.provider_id,
            |pool: &mut VolumePool| &mut pool.spec.provider_id,
        )
        .await
    }
}

#[async_trait::async_trait]
impl Reconciler<ObjectRef> for VolumePoolReconciler {
    type Error = Error;

    async fn reconcile(&self, _key: &ObjectRef) -> Result<Action> {
        let pool = self.ensure_pool().await?;
        let (classes, _) = self
            .store
            .list_typed::<VolumeClass>(&ListOptions::all())
            .await?;
        let (volumes, _) = self
            .store
            .list_typed::<Volume>(
                &ListOptions::all().field("spec.volumePoolRef.name", &self.config.pool_name),
            )
            .await?;
        let mut status = pool.status.clone();
        if let Some(runtime_classes) = self.view.classes() {
            let announced = announce_volumes(&runtime_classes, &classes, &volumes);
            status.available_volume_classes = announced.available_volume_classes;
            status.capacity = announced.capacity;
            status.allocatable = announced.allocatable;
        }
        status.state = "Available".into();
        if status != pool.status {
            let mut updated = pool;
            updated.status = status;
            self.store.update_status(updated.into_object()).await?;
        }
        Ok(Action::requeue(self.config.resync))
    }
}

#[cfg(test)]
mod tests {
    use irikit_api::meta::ObjectMeta;

    use super::*;

    fn runtime(name: &str, tps: i64, iops: i64, quantity: i64) -> volume::VolumeClassStatus {
        volume::VolumeClassStatus {
            volume_class: Some(volume::VolumeClass {
                name: name.into(),
                capabilities: Some(volume::VolumeClassCapabilities { tps, iops }),
            }),
            quantity,
        }
    }

    fn class(name: &str, tps: &str, iops: &str) -> VolumeClass {
        VolumeClass {
            metadata: ObjectMeta::named(name),
            capabilities: [
                ("tps".to_string(), tps.parse().unwrap_or_default()),
                ("iops".to_string(), iops.parse().unwrap_or_default()),
            ]
            .into(),
            ..VolumeClass::default()
        }
    }

    fn volume(uid: &str, class: &str, storage: &str) -> Volume {
        let mut v = Volume::default();
        v.metadata.uid = uid.into();
        v.spec.volume_class_ref = Some(LocalObjectReference::new(class));
        v.spec
            .resources
            .insert("storage".into(), storage.parse().unwrap_or_default());
        v
    }

    #[test]
    fn mapping_prefers_the_same_name_then_a_unique_key() {
        let classes = [
            runtime("fast", 100, 1000, 1),
            runtime("fast-copy", 100, 1000, 2),
            runtime("slow", 10, 100, 3),
        ];
        let got = |name, key| map_volume_class(name, key, &classes).map(|c| c.quantity);
        assert_eq!(got("fast-copy", (100, 1000)), Ok(2));
        assert_eq!(got("other", (10, 100)), Ok(3));
        assert_eq!(
            got("other", (100, 1000)),
            Err(ClassMapError::Ambiguous(vec![
                "fast".into(),
                "fast-copy".into()
            ]))
        );
        assert_eq!(got("fast", (100, 999)), Err(ClassMapError::NoMatch));
    }

    #[test]
    fn allocatable_subtracts_requested_bytes_per_class_once_per_uid() {
        let runtime_classes = [runtime("fast", 100, 1000, 10 << 30)];
        let classes = [class("fast", "100", "1k"), class("none", "1", "1")];
        let volumes = [
            volume("a", "fast", "3Gi"),
            volume("a", "fast", "3Gi"),
            volume("b", "fast", "1Gi"),
            volume("c", "none", "1Gi"),
        ];
        let out = announce_volumes(&runtime_classes, &classes, &volumes);
        assert_eq!(
            out.available_volume_classes,
            [LocalObjectReference::new("fast")]
        );
        let shown = |list: &ResourceList| {
            list.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(shown(&out.capacity), ["class/volume.fast=10Gi"]);
        assert_eq!(shown(&out.allocatable), ["class/volume.fast=6Gi"]);
        let full = announce_volumes(&runtime_classes, &classes, &[volume("d", "fast", "20Gi")]);
        assert_eq!(shown(&full.allocatable), ["class/volume.fast=0"]);
    }
}
