//! The ironcore-object side both object reconcilers (Machine, Volume, VolumeSnapshot) share:
//! reading an object that may be gone, finalizers, the reference an Event names, and the
//! bookkeeping of a reconciler's own writes so that their watch events do not enqueue again.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use irikit_api::{
    Kind, Object, Resource, Store, StoreExt, core::ObjectReference, meta::ObjectMeta, store,
};
use tracing::info;

use crate::{
    controller::{Action, ObjectRef},
    error::Result,
};

/// Reads an object; `None` when it does not exist.
pub(crate) async fn get_optional<R: Resource>(
    store: &dyn Store,
    namespace: &str,
    name: &str,
) -> Result<Option<R>> {
    match store.get_typed::<R>(namespace, name).await {
        Ok(obj) => Ok(Some(obj)),
        Err(store::Error::NotFound { .. }) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Whether `md` carries `finalizer`.
pub(crate) fn has_finalizer(md: &ObjectMeta, finalizer: &str) -> bool {
    md.finalizers.iter().any(|f| f == finalizer)
}

/// Removes `finalizer` from `obj` (an object already gone is fine).
pub(crate) async fn remove_finalizer<R: Resource>(
    store: &dyn Store,
    mut obj: R,
    finalizer: &str,
) -> Result<Action> {
    obj.meta_mut().finalizers.retain(|f| f != finalizer);
    match store.update_typed(obj).await {
        Ok(_) | Err(store::Error::NotFound { .. }) => {}
        Err(err) => return Err(err.into()),
    }
    info!(finalizer, "runtime object gone; finalizer removed");
    Ok(Action::await_change())
}

/// The reference an Event about the object of `kind` with metadata `md` names.
pub(crate) fn involved(kind: Kind, md: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: kind.api_version().to_string(),
        kind: kind.as_str().to_string(),
        namespace: md.namespace.clone(),
        name: md.name.clone(),
        uid: md.uid.clone(),
        resource_version: md.resource_version.clone(),
    }
}

/// The resourceVersions of a reconciler's writes whose watch events have not been seen yet, by
/// object key (a reconcile writes the finalizer and then the status).
#[derive(Debug, Default)]
pub(crate) struct OwnWrites {
    versions: Mutex<HashMap<ObjectRef, Vec<String>>>,
}

impl OwnWrites {
    /// Notes a write.
    pub(crate) fn note(&self, written: &Object) {
        let mut own = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        let versions = own.entry(ObjectRef::of(written)).or_default();
        // Bounded: a version whose event never comes (the watch relisted) must not pile up.
        if versions.len() >= 4 {
            versions.remove(0);
        }
        versions.push(written.metadata().resource_version.clone());
    }

    /// Whether a watch event carries a noted write not seen yet (and forgets it and every
    /// earlier one: events come in revision order). Any other resourceVersion is not one.
    pub(crate) fn take(&self, obj: &Object) -> bool {
        let key = ObjectRef::of(obj);
        let mut own = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(versions) = own.get_mut(&key) else {
            return false;
        };
        let rv = &obj.metadata().resource_version;
        let Some(at) = versions.iter().position(|v| v == rv) else {
            return false;
        };
        versions.drain(..=at);
        if versions.is_empty() {
            own.remove(&key);
        }
        true
    }
}
