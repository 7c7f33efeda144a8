//! The volumepoollet's object reconcilers (reference §3.1, §3.2, §3.3, §4.2): the Volume
//! reconciler here, the VolumeSnapshot reconciler in `snapshot`, the runtime calls and the
//! relist they share.
//!
//! **Volume** (key `namespace/name`, Volumes whose `spec.volumePoolRef` is this pool and that
//! have a class; a Volume without a class is provisioned externally and left alone):
//! 1. lists the IRI volumes labelled with that namespace and name and deletes those whose
//!    `volume-uid` is not the current Volume's ("delete gone": the Volume is gone or was
//!    re-created);
//! 2. deleting: DeleteVolume for every IRI volume with its uid, requeue while any Delete
//!    succeeded; then the access Secrets are deleted (the store has no garbage collector) and
//!    the finalizer `volumepoollet.ironcore.dev/volume` removed;
//! 3. finalizer first; several IRI volumes for one uid: the oldest is kept, the rest deleted;
//! 4. none: prerequisites — the VolumeClass exists (else Event `VolumeClassNotReady`) and maps;
//!    the encryption Secret (else `VolumeEncryptionSecretNotReady`); the data source: `osImage`
//!    → `image_data_source`, or `volumeSnapshotRef` → `snapshot_data_source` once the snapshot
//!    is Ready with a snapshotID (else `VolumeSnapshotNotReady`). The snapshot id sent is the
//!    **id part of `status.snapshotID`** (IronCore sends the object name, §8.3). A volume
//!    restored from a snapshot of an encrypted volume inherits that encryption; setting its own
//!    as well is refused (`VolumeEncryptionConflict`). CreateVolume with the uid/namespace/name
//!    labels and empty annotations;
//! 5. one: ExpandVolume when `spec.resources.storage` grew; a shrink is not sent (Warning
//!    Event `VolumeResizeNotSupported`, no retry loop);
//! 6. status: state, `lastStateTransitionTime` on change, `volumeID = <runtime>://<id>`,
//!    `resources.storage`, and `access` only when AVAILABLE with access. Access `secret_data`
//!    goes into a Secret named by the first 63 hex chars of sha256("<volume>/<handle>"), owned
//!    by the Volume and labelled `volume-uid`; without secret data such Secrets are deleted.
//!
//! **VolumeSnapshot** (filtered by pool, fixes §8.19: a snapshot is ours when its source
//! Volume's `volumePoolRef` is this pool, or when it carries the pool annotation this
//! reconciler sets together with its finalizer, so that a snapshot whose source Volume is gone
//! can still be finalized): finalizer `volumepoollet.ironcore.dev/volume-snapshot`; the source
//! Volume must be Available with a volumeID; CreateVolumeSnapshot with `volume_id` = its id
//! part and the snapshot uid/namespace/name labels; status state, snapshotID, size; delete
//! through the finalizer; orphan GC by the namespace/name labels.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use base64::Engine;
use iri_spec::{
    keys,
    kind::IriKind,
    meta::v1alpha1 as meta,
    volume::v1alpha1::{self as volume, volume_runtime_client::VolumeRuntimeClient},
};
use irikit_api::{
    Kind, ListOptions, Quantity, Resource, Store, StoreExt,
    core::Secret,
    meta::{LocalObjectReference, ObjectMeta, OwnerReference},
    quantity::Format,
    storage::{self, Volume, VolumeAccess, VolumeClass, VolumeSnapshot},
    store::{self, now_rfc3339},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::info;

use crate::{
    controller::{Action, ObjectRef, Reconciler},
    error::{ClassMapError, Error, Result, rpc},
    events,
    flavor::VolumeFlavor,
    object::{get_optional, has_finalizer, involved, remove_finalizer},
    pool::{VolumeRuntimeView, map_volume_class, requested_bytes, volume_class_key},
    runtime::{self, NameLabels, not_found_is_gone, probe_once, reduce},
};

mod snapshot;

pub use snapshot::VolumeSnapshotReconciler;

/// Event reason: the VolumeClass is missing.
pub const REASON_VOLUME_CLASS_NOT_READY: &str = "VolumeClassNotReady";
/// Event reason: the encryption Secret is missing.
pub const REASON_ENCRYPTION_SECRET_NOT_READY: &str = "VolumeEncryptionSecretNotReady";
/// Event reason: a restored volume sets its own encryption and inherits one.
pub const REASON_ENCRYPTION_CONFLICT: &str = "VolumeEncryptionConflict";
/// Event reason: the data source snapshot is missing or not Ready.
pub const REASON_SNAPSHOT_NOT_READY: &str = "VolumeSnapshotNotReady";
/// Event reason: the source Volume of a snapshot is not Available.
pub const REASON_SOURCE_VOLUME_NOT_READY: &str = "VolumeNotReady";
/// Event reason (Warning): `spec.resources.storage` is below the runtime volume's size.
pub const REASON_RESIZE_NOT_SUPPORTED: &str = "VolumeResizeNotSupported";
/// The component recorded as the source of the volumepoollet's Events.
pub const EVENT_COMPONENT: &str = <VolumeFlavor as crate::flavor::Flavor>::EVENT_SOURCE;
/// Annotation on a VolumeSnapshot naming the pool that handles it (irikit's addition, §8.19).
pub const SNAPSHOT_POOL_ANNOTATION: &str = "volumepoollet.ironcore.dev/volume-pool";

/// The default [`VolumeConfig::create_timeout`]: a 100 GiB image copied at 200 MiB/s.
pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Settings of the Volume and VolumeSnapshot reconcilers.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    /// The pool whose volumes this poollet reconciles.
    pub pool_name: String,
    /// Timeout of every runtime RPC but the creates.
    pub rpc_timeout: Duration,
    /// Timeout of CreateVolume and CreateVolumeSnapshot, which copy data (an image, a
    /// snapshot) before they answer: a call abandoned in mid-copy is retried from the start,
    /// so a short timeout turns one large copy into endless ones.
    pub create_timeout: Duration,
    /// Requeue delay while a volume or snapshot is converging (Pending, expanding, deleting).
    pub converging_requeue: Duration,
    /// Requeue delay of a settled object (level-triggered resync).
    pub resync: Duration,
    /// Requeue delay while a prerequisite (class, Secret, snapshot) is missing.
    pub prerequisite_requeue: Duration,
}

impl VolumeConfig {
    /// Defaults for `pool_name`.
    pub fn new(pool_name: impl Into<String>) -> Self {
        Self {
            pool_name: pool_name.into(),
            rpc_timeout: Duration::from_secs(5),
            create_timeout: DEFAULT_CREATE_TIMEOUT,
            converging_requeue: Duration::from_millis(250),
            resync: Duration::from_secs(60),
            prerequisite_requeue: Duration::from_secs(10),
        }
    }
}

/// The ironcore state of an IRI volume state (§3.3).
pub fn volume_state(state: i32) -> &'static str {
    match volume::VolumeState::try_from(state) {
        Ok(volume::VolumeState::VolumeAvailable) => "Available",
        Ok(volume::VolumeState::VolumeError) => "Error",
        Ok(volume::VolumeState::VolumePending) | Err(_) => "Pending",
    }
}

/// The ironcore state of an IRI snapshot state (§3.3).
pub fn snapshot_state(state: i32) -> &'static str {
    match volume::VolumeSnapshotState::try_from(state) {
        Ok(volume::VolumeSnapshotState::VolumeSnapshotReady) => "Ready",
        Ok(volume::VolumeSnapshotState::VolumeSnapshotFailed) => "Failed",
        Ok(volume::VolumeSnapshotState::VolumeSnapshotPending) | Err(_) => "Pending",
    }
}

/// The name of a volume's access Secret: the first 63 hex chars of
/// sha256("<volumeName>/<handle>").
pub fn access_secret_name(volume_name: &str, handle: &str) -> String {
    events::sha256_name(&format!("{volume_name}/{handle}"))
}

/// The id part of `<runtime>://<id>` (exactly two non-empty parts), as IronCore parses it.
pub fn id_part(id: &str) -> Option<&str> {
    let (runtime, rest) = id.split_once("://")?;
    (!runtime.is_empty() && !rest.is_empty() && !rest.contains("://")).then_some(rest)
}

/// The bytes of a Secret: `data` (base64) and `stringData`, or the key that is not base64.
pub(crate) fn secret_bytes(
    secret: &Secret,
) -> std::result::Result<HashMap<String, Vec<u8>>, String> {
    let mut out = HashMap::new();
    for (key, encoded) in &secret.data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| {
                format!(
                    "secret {:?} key {key:?} is not base64",
                    secret.metadata.name
                )
            })?;
        out.insert(key.clone(), bytes);
    }
    for (key, text) in &secret.string_data {
        out.insert(key.clone(), text.clone().into_bytes());
    }
    Ok(out)
}

fn volume_labels(v: &Volume) -> HashMap<String, String> {
    HashMap::from([
        (
            keys::VOLUMEPOOLLET_VOLUME_UID_LABEL.to_string(),
            v.metadata.uid.clone(),
        ),
        (
            keys::VOLUMEPOOLLET_VOLUME_NAMESPACE_LABEL.to_string(),
            v.metadata.namespace.clone(),
        ),
        (
            keys::VOLUMEPOOLLET_VOLUME_NAME_LABEL.to_string(),
            v.metadata.name.clone(),
        ),
    ])
}

fn selector(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn bytes_quantity(bytes: i64) -> Quantity {
    Quantity::from_int(bytes.max(0), Format::BinarySI)
}

enum Prerequisites {
    Ready(Box<volume::Volume>),
    /// An Event reason and message.
    Waiting(&'static str, String),
}

/// The runtime calls shared by the two reconcilers.
#[derive(Clone)]
struct Runtime {
    client: VolumeRuntimeClient<Channel>,
    timeout: Duration,
}

impl Runtime {
    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<volume::Volume>> {
        let mut client = self.client.clone();
        let request = volume::ListVolumesRequest {
            filter: Some(volume::VolumeFilter {
                id: String::new(),
                label_selector: selector(labels),
            }),
        };
        Ok(
            rpc("ListVolumes", self.timeout, client.list_volumes(request))
                .await?
                .volumes,
        )
    }

    async fn list_snapshots(&self, labels: &[(&str, &str)]) -> Result<Vec<volume::VolumeSnapshot>> {
        let mut client = self.client.clone();
        let request = volume::ListVolumeSnapshotsRequest {
            filter: Some(volume::VolumeSnapshotFilter {
                id: String::new(),
                label_selector: selector(labels),
            }),
        };
        Ok(rpc(
            "ListVolumeSnapshots",
            self.timeout,
            client.list_volume_snapshots(request),
        )
        .await?
        .volume_snapshots)
    }

    /// `Ok(true)` if the runtime accepted the delete, `Ok(false)` if the volume was gone.
    async fn delete_volume(&self, id: &str) -> Result<bool> {
        let mut client = self.client.clone();
        let request = volume::DeleteVolumeRequest {
            volume_id: id.to_string(),
        };
        not_found_is_gone(rpc("DeleteVolume", self.timeout, client.delete_volume(request)).await)
    }

    /// `Ok(true)` if the runtime accepted the delete, `Ok(false)` if the snapshot was gone.
    async fn delete_snapshot(&self, id: &str) -> Result<bool> {
        let mut client = self.client.clone();
        let request = volume::DeleteVolumeSnapshotRequest {
            volume_snapshot_id: id.to_string(),
        };
        not_found_is_gone(
            rpc(
                "DeleteVolumeSnapshot",
                self.timeout,
                client.delete_volume_snapshot(request),
            )
            .await,
        )
    }
}

/// A kind of object of the volume runtime: a volume or a snapshot.
trait VolumeRuntimeKind: IriKind {
    /// The label with the uid of the ironcore object.
    const UID_LABEL: &'static str;
    /// The labels with its namespace and name.
    const NAME_LABELS: NameLabels;
    /// The runtime objects of this kind with `labels`.
    fn list(
        rt: &Runtime,
        labels: &[(&str, &str)],
    ) -> impl Future<Output = Result<Vec<Self>>> + Send;
    /// Deletes one: `Ok(true)` if the runtime accepted the delete, `Ok(false)` if it was gone.
    fn delete(rt: &Runtime, id: &str) -> impl Future<Output = Result<bool>> + Send;
}

impl VolumeRuntimeKind for volume::Volume {
    const UID_LABEL: &'static str = keys::VOLUMEPOOLLET_VOLUME_UID_LABEL;
    const NAME_LABELS: NameLabels = VOLUME_NAME_LABELS;
    fn list(
        rt: &Runtime,
        labels: &[(&str, &str)],
    ) -> impl Future<Output = Result<Vec<Self>>> + Send {
        rt.list_volumes(labels)
    }
    fn delete(rt: &Runtime, id: &str) -> impl Future<Output = Result<bool>> + Send {
        rt.delete_volume(id)
    }
}

impl VolumeRuntimeKind for volume::VolumeSnapshot {
    const UID_LABEL: &'static str = keys::VOLUME_SNAPSHOT_UID_LABEL;
    const NAME_LABELS: NameLabels = SNAPSHOT_NAME_LABELS;
    fn list(
        rt: &Runtime,
        labels: &[(&str, &str)],
    ) -> impl Future<Output = Result<Vec<Self>>> + Send {
        rt.list_snapshots(labels)
    }
    fn delete(rt: &Runtime, id: &str) -> impl Future<Output = Result<bool>> + Send {
        rt.delete_snapshot(id)
    }
}

impl Runtime {
    /// The runtime object of kind `K` of the ironcore object `key` with `uid` (`None`: it is
    /// gone or not this pool's), after the others labelled with `key` are deleted ([`reduce`]).
    async fn named<K: VolumeRuntimeKind>(
        &self,
        key: &ObjectRef,
        uid: Option<&str>,
    ) -> Result<Option<K>> {
        let labels = [
            (K::NAME_LABELS.namespace, key.namespace.as_str()),
            (K::NAME_LABELS.name, key.name.as_str()),
        ];
        let listed = K::list(self, &labels).await?;
        self.reduce(listed, uid).await
    }

    /// Of the objects listed for one ironcore name: see [`reduce`].
    async fn reduce<K: VolumeRuntimeKind>(
        &self,
        listed: Vec<K>,
        uid: Option<&str>,
    ) -> Result<Option<K>> {
        reduce(listed, K::UID_LABEL, uid, |id| async move {
            K::delete(self, &id).await
        })
        .await
    }

    /// Deletes every runtime object of kind `K` labelled with `uid`; returns whether any is
    /// still being deleted (a Delete succeeded), in which case the caller requeues (§2.2).
    async fn delete_all_of<K: VolumeRuntimeKind>(&self, uid: &str) -> Result<bool> {
        let mut still_deleting = false;
        for obj in K::list(self, &[(K::UID_LABEL, uid)]).await? {
            still_deleting |= K::delete(self, obj.id()).await?;
        }
        Ok(still_deleting)
    }
}

/// What both volume reconcilers hold: the store, the runtime, its name and the settings.
struct Base {
    store: Arc<dyn Store>,
    runtime: Runtime,
    runtime_name: String,
    config: VolumeConfig,
}

impl Base {
    fn new(
        store: Arc<dyn Store>,
        client: VolumeRuntimeClient<Channel>,
        runtime_name: String,
        config: VolumeConfig,
    ) -> Self {
        let runtime = Runtime {
            client,
            timeout: config.rpc_timeout,
        };
        Self {
            store,
            runtime,
            runtime_name,
            config,
        }
    }
}

/// Reconciles the Volumes bound to one pool against the volume runtime.
pub struct VolumeReconciler {
    base: Base,
    view: VolumeRuntimeView,
}

impl VolumeReconciler {
    /// A reconciler talking to the runtime through `client`; `runtime_name` is the `Version`
    /// answer used in `volumeID`.
    pub fn new(
        store: Arc<dyn Store>,
        client: VolumeRuntimeClient<Channel>,
        runtime_name: impl Into<String>,
        view: VolumeRuntimeView,
        config: VolumeConfig,
    ) -> Self {
        Self {
            base: Base::new(store, client, runtime_name.into(), config),
            view,
        }
    }

    async fn record_event(&self, v: &Volume, type_: &str, reason: &str, message: &str) {
        events::record(
            self.base.store.as_ref(),
            involved(Kind::Volume, &v.metadata),
            type_,
            reason,
            message,
            EVENT_COMPONENT,
        )
        .await;
    }

    async fn runtime_classes(&self) -> Option<Vec<volume::VolumeClassStatus>> {
        if let Some(classes) = self.view.classes() {
            return Some(classes);
        }
        probe_once::<VolumeFlavor>(
            &self.base.runtime.client,
            self.base.config.rpc_timeout,
            &self.view,
        )
        .await;
        self.view.classes()
    }

    async fn secret_data(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<std::result::Result<HashMap<String, Vec<u8>>, String>> {
        match self.base.store.get_typed::<Secret>(namespace, name).await {
            Ok(secret) => Ok(secret_bytes(&secret)),
            Err(store::Error::NotFound { .. }) => {
                Ok(Err(format!("encryption secret {name:?} not found")))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Builds the CreateVolume request, or says what is missing.
    async fn prerequisites(&self, v: &Volume, class_name: &str) -> Result<Prerequisites> {
        let namespace = &v.metadata.namespace;
        let class = match self
            .base
            .store
            .get_typed::<VolumeClass>("", class_name)
            .await
        {
            Ok(class) => class,
            Err(store::Error::NotFound { .. }) => {
                return Ok(Prerequisites::Waiting(
                    REASON_VOLUME_CLASS_NOT_READY,
                    format!("volume class {class_name:?} not found"),
                ));
            }
            Err(err) => return Err(err.into()),
        };
        let Some(runtime_classes) = self.runtime_classes().await else {
            return Err(Error::VolumeClassMapping {
                class: class_name.to_string(),
                reason: ClassMapError::Unknown,
            });
        };
        let runtime_class =
            map_volume_class(class_name, volume_class_key(&class), &runtime_classes).map_err(
                |reason| Error::VolumeClassMapping {
                    class: class_name.to_string(),
                    reason,
                },
            )?;
        let iri_class = runtime_class
            .volume_class
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_default();

        let mut encryption_secret = v
            .spec
            .encryption
            .as_ref()
            .map(|e| e.secret_ref.name.clone());
        let mut data_source = None;
        if let Some(source) = &v.spec.data_source {
            if let Some(image) = &source.os_image {
                data_source = Some(volume::VolumeDataSource {
                    image_data_source: Some(volume::ImageDataSource {
                        image: image.image.clone(),
                        architecture: image.architecture.clone(),
                    }),
                    snapshot_data_source: None,
                });
            } else if let Some(snapshot_ref) = &source.volume_snapshot_ref {
                let snapshot = match self
                    .base
                    .store
                    .get_typed::<VolumeSnapshot>(namespace, &snapshot_ref.name)
                    .await
                {
                    Ok(snapshot) => snapshot,
                    Err(store::Error::NotFound { .. }) => {
                        return Ok(Prerequisites::Waiting(
                            REASON_SNAPSHOT_NOT_READY,
                            format!("volume snapshot {:?} not found", snapshot_ref.name),
                        ));
                    }
                    Err(err) => return Err(err.into()),
                };
                let snapshot_id = id_part(&snapshot.status.snapshot_id);
                let Some(snapshot_id) = snapshot_id.filter(|_| snapshot.status.state == "Ready")
                else {
                    return Ok(Prerequisites::Waiting(
                        REASON_SNAPSHOT_NOT_READY,
                        format!("volume snapshot {:?} is not ready", snapshot_ref.name),
                    ));
                };
                // A restore inherits the source volume's encryption.
                match self
                    .base
                    .store
                    .get_typed::<Volume>(namespace, &snapshot.spec.volume_ref.name)
                    .await
                {
                    Ok(source_volume) => {
                        if let Some(inherited) = &source_volume.spec.encryption {
                            if encryption_secret.is_some() {
                                return Ok(Prerequisites::Waiting(
                                    REASON_ENCRYPTION_CONFLICT,
                                    format!(
                                        "the snapshot's source volume {:?} is encrypted: a restored volume inherits its encryption and must not set its own",
                                        source_volume.metadata.name
                                    ),
                                ));
                            }
                            encryption_secret = Some(inherited.secret_ref.name.clone());
                        }
                    }
                    // The source is gone: the snapshot restores as is.
                    Err(store::Error::NotFound { .. }) => {}
                    Err(err) => return Err(err.into()),
                }
                data_source = Some(volume::VolumeDataSource {
                    image_data_source: None,
                    snapshot_data_source: Some(volume::SnapshotDataSource {
                        snapshot_id: snapshot_id.to_string(),
                    }),
                });
            }
        }
        let encryption = match &encryption_secret {
            None => None,
            Some(name) => match self.secret_data(namespace, name).await? {
                Ok(secret_data) => Some(volume::EncryptionSpec { secret_data }),
                Err(message) => {
                    return Ok(Prerequisites::Waiting(
                        REASON_ENCRYPTION_SECRET_NOT_READY,
                        message,
                    ));
                }
            },
        };
        Ok(Prerequisites::Ready(Box::new(volume::Volume {
            metadata: Some(meta::ObjectMetadata {
                labels: volume_labels(v),
                annotations: HashMap::new(),
                ..meta::ObjectMetadata::default()
            }),
            spec: Some(volume::VolumeSpec {
                class: iri_class,
                resources: Some(volume::VolumeResources {
                    storage_bytes: requested_bytes(v),
                }),
                encryption,
                volume_data_source: data_source,
            }),
            status: None,
        })))
    }

    async fn create(&self, v: &Volume, class_name: &str) -> Result<Action> {
        let request = match self.prerequisites(v, class_name).await? {
            Prerequisites::Ready(request) => request,
            Prerequisites::Waiting(reason, message) => {
                info!(%reason, %message, "prerequisites not met; not creating the volume yet");
                self.record_event(v, "Normal", reason, &message).await;
                return Ok(Action::requeue(self.base.config.prerequisite_requeue));
            }
        };
        let mut client = self.base.runtime.client.clone();
        let created = rpc(
            "CreateVolume",
            self.base.config.create_timeout,
            client.create_volume(volume::CreateVolumeRequest {
                volume: Some(*request),
            }),
        )
        .await?
        .volume
        .ok_or_else(|| Error::BadResponse("CreateVolume without a volume".into()))?;
        let id = created.id().to_string();
        if id.is_empty() {
            return Err(Error::BadResponse(
                "CreateVolume without metadata.id".into(),
            ));
        }
        info!(volume_id = %id, "volume created on the runtime");
        self.write_status(v, &created).await?;
        Ok(Action::requeue(self.base.config.converging_requeue))
    }

    async fn update(&self, v: &Volume, iri: volume::Volume) -> Result<Action> {
        let id = iri.id().to_string();
        let current = iri
            .spec
            .as_ref()
            .and_then(|s| s.resources)
            .map_or(0, |r| r.storage_bytes);
        let wanted = requested_bytes(v);
        let mut expanding = false;
        if wanted > current {
            let mut client = self.base.runtime.client.clone();
            rpc(
                "ExpandVolume",
                self.base.config.rpc_timeout,
                client.expand_volume(volume::ExpandVolumeRequest {
                    volume_id: id.clone(),
                    resources: Some(volume::VolumeResources {
                        storage_bytes: wanted,
                    }),
                }),
            )
            .await?;
            info!(volume_id = %id, from = current, to = wanted, "volume expansion requested");
            expanding = true;
        } else if wanted < current {
            let message = format!(
                "spec.resources.storage ({wanted} bytes) is below the volume's size ({current} bytes): volumes only grow"
            );
            self.record_event(v, "Warning", REASON_RESIZE_NOT_SUPPORTED, &message)
                .await;
        }
        let settled = self.write_status(v, &iri).await? && !expanding;
        Ok(Action::requeue(if settled {
            self.base.config.resync
        } else {
            self.base.config.converging_requeue
        }))
    }

    /// Writes the Volume status (and the access Secret) from the IRI volume. Returns whether the
    /// volume is settled (Available with the requested size, or Error).
    async fn write_status(&self, v: &Volume, iri: &volume::Volume) -> Result<bool> {
        let iri_status = iri.status.clone().unwrap_or_default();
        let id = iri.id().to_string();
        let state = volume_state(iri_status.state);
        let mut status = v.status.clone();
        if status.state != state || status.last_state_transition_time.is_none() {
            status.last_state_transition_time = Some(now_rfc3339());
        }
        status.state = state.to_string();
        status.volume_id = format!("{}://{id}", self.base.runtime_name);
        status.resources.remove("storage");
        let effective = iri_status.resources.map_or(0, |r| r.storage_bytes);
        if effective > 0 {
            status
                .resources
                .insert("storage".into(), bytes_quantity(effective));
        }
        let access = iri_status.access.filter(|_| state == "Available");
        let secret_name = match &access {
            Some(access) if !access.secret_data.is_empty() => Some(
                self.apply_access_secret(v, &access.handle, &access.secret_data)
                    .await?,
            ),
            _ => None,
        };
        self.delete_access_secrets(v, secret_name.as_deref())
            .await?;
        status.access = access.map(|access| VolumeAccess {
            secret_ref: secret_name.map(LocalObjectReference::new),
            driver: access.driver,
            handle: access.handle,
            volume_attributes: access.attributes.into_iter().collect(),
        });
        let settled = match state {
            "Available" => effective >= requested_bytes(v),
            "Error" => true,
            _ => false,
        };
        if status != v.status {
            if status.state != v.status.state {
                info!(state = %status.state, volume_id = %status.volume_id, "volume state changed");
            }
            let mut updated = v.clone();
            updated.status = status;
            self.base.store.update_status(updated.into_object()).await?;
        }
        Ok(settled)
    }

    /// Creates or updates the access Secret of `v`; returns its name.
    async fn apply_access_secret(
        &self,
        v: &Volume,
        handle: &str,
        secret_data: &HashMap<String, Vec<u8>>,
    ) -> Result<String> {
        let name = access_secret_name(&v.metadata.name, handle);
        let namespace = &v.metadata.namespace;
        let data: BTreeMap<String, String> = secret_data
            .iter()
            .map(|(k, bytes)| {
                (
                    k.clone(),
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                )
            })
            .collect();
        let labels = BTreeMap::from([(
            keys::VOLUMEPOOLLET_VOLUME_UID_LABEL.to_string(),
            v.metadata.uid.clone(),
        )]);
        let owner = OwnerReference {
            api_version: storage::API_VERSION.to_string(),
            kind: Kind::Volume.as_str().to_string(),
            name: v.metadata.name.clone(),
            uid: v.metadata.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        match self.base.store.get_typed::<Secret>(namespace, &name).await {
            Ok(mut secret) => {
                let owned = secret.metadata.owner_references.contains(&owner);
                let labelled = labels
                    .iter()
                    .all(|(k, val)| secret.metadata.labels.get(k) == Some(val));
                if owned && labelled && secret.data == data && secret.string_data.is_empty() {
                    return Ok(name);
                }
                secret.metadata.labels.extend(labels);
                secret.metadata.owner_references = vec![owner];
                secret.data = data;
                secret.string_data.clear();
                self.base.store.update_typed(secret).await?;
            }
            Err(store::Error::NotFound { .. }) => {
                let mut secret = Secret {
                    metadata: ObjectMeta::namespaced(namespace.clone(), name.clone()),
                    data,
                    ..Secret::default()
                };
                secret.metadata.labels = labels;
                secret.metadata.owner_references = vec![owner];
                self.base.store.create_typed(secret).await?;
                info!(secret = %name, "volume access secret created");
            }
            Err(err) => return Err(err.into()),
        }
        Ok(name)
    }

    /// Deletes the access Secrets of `v` (by the `volume-uid` label) except `keep`.
    async fn delete_access_secrets(&self, v: &Volume, keep: Option<&str>) -> Result<()> {
        let (secrets, _) = self
            .base
            .store
            .list_typed::<Secret>(
                &ListOptions::all()
                    .in_namespace(&v.metadata.namespace)
                    .label(keys::VOLUMEPOOLLET_VOLUME_UID_LABEL, &v.metadata.uid),
            )
            .await?;
        for secret in secrets {
            if Some(secret.metadata.name.as_str()) == keep {
                continue;
            }
            match self
                .base
                .store
                .delete(
                    Kind::Secret,
                    &v.metadata.namespace,
                    &secret.metadata.name,
                    None,
                )
                .await
            {
                Ok(_) | Err(store::Error::NotFound { .. }) => {
                    info!(secret = %secret.metadata.name, "volume access secret deleted");
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    async fn finalize(&self, v: Volume) -> Result<Action> {
        if self
            .base
            .runtime
            .delete_all_of::<volume::Volume>(&v.metadata.uid)
            .await?
        {
            return Ok(Action::requeue(self.base.config.converging_requeue));
        }
        self.delete_access_secrets(&v, None).await?;
        remove_finalizer(self.base.store.as_ref(), v, keys::VOLUME_FINALIZER).await
    }
}

#[async_trait::async_trait]
impl Reconciler<ObjectRef> for VolumeReconciler {
    type Error = Error;

    async fn reconcile(&self, key: &ObjectRef) -> Result<Action> {
        let current: Option<Volume> =
            get_optional(self.base.store.as_ref(), &key.namespace, &key.name).await?;
        let ours = current.filter(|v| {
            v.spec
                .volume_pool_ref
                .as_ref()
                .is_some_and(|r| r.name == self.base.config.pool_name)
                && v.spec.volume_class_ref.is_some()
        });
        let uid = ours.as_ref().map(|v| v.metadata.uid.as_str());
        let iri: Option<volume::Volume> = self.base.runtime.named(key, uid).await?;
        let Some(v) = ours else {
            return Ok(Action::await_change());
        };
        if v.metadata.is_deleting() {
            if has_finalizer(&v.metadata, keys::VOLUME_FINALIZER) {
                return self.finalize(v).await;
            }
            return Ok(Action::await_change());
        }
        let v = if has_finalizer(&v.metadata, keys::VOLUME_FINALIZER) {
            v
        } else {
            let mut with = v;
            with.metadata
                .finalizers
                .push(keys::VOLUME_FINALIZER.to_string());
            self.base.store.update_typed(with).await?
        };
        let Some(iri) = iri else {
            let class_name = v
                .spec
                .volume_class_ref
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_default();
            return self.create(&v, &class_name).await;
        };
        if iri.is_deleting() {
            return Ok(Action::requeue(self.base.config.converging_requeue));
        }
        self.update(&v, iri).await
    }
}

/// The labels that name the Volume of an IRI volume.
pub const VOLUME_NAME_LABELS: NameLabels = NameLabels {
    namespace: keys::VOLUMEPOOLLET_VOLUME_NAMESPACE_LABEL,
    name: keys::VOLUMEPOOLLET_VOLUME_NAME_LABEL,
};
/// The labels that name the VolumeSnapshot of an IRI snapshot.
pub const SNAPSHOT_NAME_LABELS: NameLabels = NameLabels {
    namespace: keys::VOLUME_SNAPSHOT_NAMESPACE_LABEL,
    name: keys::VOLUME_SNAPSHOT_NAME_LABEL,
};

/// [`runtime::relist`] of the runtime objects of kind `K`.
async fn relist_kind<K: VolumeRuntimeKind>(
    runtime: &Runtime,
    period: Duration,
    on_key: impl Fn(ObjectRef) + Send,
    token: CancellationToken,
) {
    let list = || K::list(runtime, &[]);
    runtime::relist(
        list,
        K::NAME_LABELS,
        period,
        move |key, _| on_key(key),
        token,
    )
    .await;
}

/// Lists every runtime volume and snapshot every `period` and calls `on_volume` /
/// `on_snapshot` with the key of each one that appeared, changed or disappeared (IronCore's
/// generators). This drives status propagation and finds orphans.
pub async fn runtime_relist(
    client: VolumeRuntimeClient<Channel>,
    period: Duration,
    timeout: Duration,
    on_volume: impl Fn(ObjectRef) + Send,
    on_snapshot: impl Fn(ObjectRef) + Send,
    token: CancellationToken,
) {
    let runtime = Runtime { client, timeout };
    let volumes = relist_kind::<volume::Volume>(&runtime, period, on_volume, token.clone());
    let snapshots = relist_kind::<volume::VolumeSnapshot>(&runtime, period, on_snapshot, token);
    tokio::join!(volumes, snapshots);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_part_needs_exactly_two_non_empty_parts() {
        assert_eq!(id_part("iri-mock://abc"), Some("abc"));
        assert_eq!(id_part("abc"), None);
        assert_eq!(id_part("://abc"), None);
        assert_eq!(id_part("a://"), None);
        assert_eq!(id_part("a://b://c"), None);
    }

    #[test]
    fn states_map_as_in_ironcore() {
        assert_eq!(
            volume_state(volume::VolumeState::VolumeAvailable as i32),
            "Available"
        );
        assert_eq!(
            volume_state(volume::VolumeState::VolumeError as i32),
            "Error"
        );
        assert_eq!(volume_state(99), "Pending");
        assert_eq!(
            snapshot_state(volume::VolumeSnapshotState::VolumeSnapshotFailed as i32),
            "Failed"
        );
        assert_eq!(
            snapshot_state(volume::VolumeSnapshotState::VolumeSnapshotReady as i32),
            "Ready"
        );
    }

    #[test]
    fn secret_bytes_decode_data_and_take_string_data() {
        let mut secret = Secret::default();
        secret.data.insert("a".into(), "aGk=".into());
        secret.string_data.insert("b".into(), "yo".into());
        let bytes = secret_bytes(&secret).unwrap_or_default();
        assert_eq!(bytes.get("a").map(Vec::as_slice), Some(&b"hi"[..]));
        assert_eq!(bytes.get("b").map(Vec::as_slice), Some(&b"yo"[..]));
        secret.data.insert("c".into(), "not base64!".into());
        assert!(secret_bytes(&secret).is_err());
    }
}
