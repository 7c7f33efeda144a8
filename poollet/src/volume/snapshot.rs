//! The VolumeSnapshot reconciler of the volumepoollet (reference §3.2, §4.2; see the
//! [parent module](super) for the rules): a snapshot is this pool's when its source Volume is
//! bound here or it carries this pool's annotation; CreateVolumeSnapshot once the source is
//! Available, the status copied back, delete through the finalizer, orphans collected by name.

use std::{collections::HashMap, sync::Arc};

use iri_spec::{
    keys,
    kind::IriKind,
    meta::v1alpha1 as meta,
    volume::v1alpha1::{self as volume, volume_runtime_client::VolumeRuntimeClient},
};
use irikit_api::{
    Kind, Resource, Store, StoreExt,
    storage::{Volume, VolumeSnapshot},
    store::now_rfc3339,
};
use tonic::transport::Channel;
use tracing::info;

use super::{
    Base, EVENT_COMPONENT, REASON_SOURCE_VOLUME_NOT_READY, SNAPSHOT_POOL_ANNOTATION, VolumeConfig,
    bytes_quantity, id_part, snapshot_state,
};
use crate::{
    controller::{Action, ObjectRef, Reconciler},
    error::{Error, Result, rpc},
    events,
    object::{get_optional, has_finalizer, involved, remove_finalizer},
};

/// Reconciles the VolumeSnapshots whose source Volume is on this pool.
pub struct VolumeSnapshotReconciler {
    base: Base,
}

impl VolumeSnapshotReconciler {
    /// A reconciler talking to the runtime through `client`.
    pub fn new(
        store: Arc<dyn Store>,
        client: VolumeRuntimeClient<Channel>,
        runtime_name: impl Into<String>,
        config: VolumeConfig,
    ) -> Self {
        Self {
            base: Base::new(store, client, runtime_name.into(), config),
        }
    }

    /// Whether `s` belongs to this pool: its source Volume is bound here, or this poollet
    /// marked it when it took it over.
    async fn is_ours(&self, s: &VolumeSnapshot) -> Result<bool> {
        if s.metadata.annotations.get(SNAPSHOT_POOL_ANNOTATION) == Some(&self.base.config.pool_name)
        {
            return Ok(true);
        }
        let source: Option<Volume> = get_optional(
            self.base.store.as_ref(),
            &s.metadata.namespace,
            &s.spec.volume_ref.name,
        )
        .await?;
        Ok(source.is_some_and(|v| {
            v.spec
                .volume_pool_ref
                .is_some_and(|r| r.name == self.base.config.pool_name)
        }))
    }

    async fn create(&self, s: &VolumeSnapshot) -> Result<Action> {
        let source: Option<Volume> = get_optional(
            self.base.store.as_ref(),
            &s.metadata.namespace,
            &s.spec.volume_ref.name,
        )
        .await?;
        let volume_id = source
            .as_ref()
            .filter(|v| v.status.state == "Available")
            .and_then(|v| id_part(&v.status.volume_id));
        let Some(volume_id) = volume_id else {
            let message = format!(
                "source volume {:?} is not available",
                s.spec.volume_ref.name
            );
            info!(%message, "not creating the volume snapshot yet");
            events::record(
                self.base.store.as_ref(),
                involved(Kind::VolumeSnapshot, &s.metadata),
                "Normal",
                REASON_SOURCE_VOLUME_NOT_READY,
                &message,
                EVENT_COMPONENT,
            )
            .await;
            return Ok(Action::requeue(self.base.config.prerequisite_requeue));
        };
        let labels = HashMap::from([
            (
                keys::VOLUME_SNAPSHOT_UID_LABEL.to_string(),
                s.metadata.uid.clone(),
            ),
            (
                keys::VOLUME_SNAPSHOT_NAMESPACE_LABEL.to_string(),
                s.metadata.namespace.clone(),
            ),
            (
                keys::VOLUME_SNAPSHOT_NAME_LABEL.to_string(),
                s.metadata.name.clone(),
            ),
        ]);
        let mut client = self.base.runtime.client.clone();
        let created = rpc(
            "CreateVolumeSnapshot",
            self.base.config.create_timeout,
            client.create_volume_snapshot(volume::CreateVolumeSnapshotRequest {
                volume_snapshot: Some(volume::VolumeSnapshot {
                    metadata: Some(meta::ObjectMetadata {
                        labels,
                        ..meta::ObjectMetadata::default()
                    }),
                    spec: Some(volume::VolumeSnapshotSpec {
                        volume_id: volume_id.to_string(),
                    }),
                    status: None,
                }),
            }),
        )
        .await?
        .volume_snapshot
        .ok_or_else(|| Error::BadResponse("CreateVolumeSnapshot without a snapshot".into()))?;
        info!(snapshot_id = %created.id().to_string(), "volume snapshot created on the runtime");
        self.write_status(s, &created).await?;
        Ok(Action::requeue(self.base.config.converging_requeue))
    }

    /// Writes the snapshot status; returns whether it is settled (Ready or Failed).
    async fn write_status(&self, s: &VolumeSnapshot, iri: &volume::VolumeSnapshot) -> Result<bool> {
        let iri_status = iri.status.unwrap_or_default();
        let state = snapshot_state(iri_status.state);
        let mut status = s.status.clone();
        if status.state != state || status.last_state_transition_time.is_none() {
            status.last_state_transition_time = Some(now_rfc3339());
        }
        status.state = state.to_string();
        status.snapshot_id = format!("{}://{}", self.base.runtime_name, iri.id());
        if iri_status.size > 0 {
            status.size = Some(bytes_quantity(iri_status.size));
        }
        if status != s.status {
            let mut updated = s.clone();
            updated.status = status;
            self.base.store.update_status(updated.into_object()).await?;
        }
        Ok(state != "Pending")
    }

    async fn finalize(&self, s: VolumeSnapshot) -> Result<Action> {
        if self
            .base
            .runtime
            .delete_all_of::<volume::VolumeSnapshot>(&s.metadata.uid)
            .await?
        {
            return Ok(Action::requeue(self.base.config.converging_requeue));
        }
        remove_finalizer(self.base.store.as_ref(), s, keys::VOLUME_SNAPSHOT_FINALIZER).await
    }
}

#[async_trait::async_trait]
impl Reconciler<ObjectRef> for VolumeSnapshotReconciler {
    type Error = Error;

    async fn reconcile(&self, key: &ObjectRef) -> Result<Action> {
        let current: Option<VolumeSnapshot> =
            get_optional(self.base.store.as_ref(), &key.namespace, &key.name).await?;
        let ours = match current {
            Some(s) if self.is_ours(&s).await? => Some(s),
            _ => None,
        };
        let uid = ours.as_ref().map(|s| s.metadata.uid.as_str());
        let iri: Option<volume::VolumeSnapshot> = self.base.runtime.named(key, uid).await?;
        let Some(s) = ours else {
            return Ok(Action::await_change());
        };
        if s.metadata.is_deleting() {
            if has_finalizer(&s.metadata, keys::VOLUME_SNAPSHOT_FINALIZER) {
                return self.finalize(s).await;
            }
            return Ok(Action::await_change());
        }
        let marked = has_finalizer(&s.metadata, keys::VOLUME_SNAPSHOT_FINALIZER)
            && s.metadata.annotations.get(SNAPSHOT_POOL_ANNOTATION)
                == Some(&self.base.config.pool_name);
        let s = if marked {
            s
        } else {
            let mut with = s;
            if !has_finalizer(&with.metadata, keys::VOLUME_SNAPSHOT_FINALIZER) {
                with.metadata
                    .finalizers
                    .push(keys::VOLUME_SNAPSHOT_FINALIZER.to_string());
            }
            with.metadata.annotations.insert(
                SNAPSHOT_POOL_ANNOTATION.to_string(),
                self.base.config.pool_name.clone(),
            );
            self.base.store.update_typed(with).await?
        };
        let Some(iri) = iri else {
            return self.create(&s).await;
        };
        let settled = self.write_status(&s, &iri).await?;
        Ok(Action::requeue(if settled {
            self.base.config.resync
        } else {
            self.base.config.converging_requeue
        }))
    }
}
