//! The [`Store`] trait: IronCore's API-server semantics (optimistic concurrency, generation,
//! finalizers, watch from a revision) over pluggable backends — [`memory::MemoryStore`]
//! (embedded default) and, with the `etcd` feature, `etcd::EtcdStore`.
//!
//! Both backends share the write rules in this module (`prepare_*`), so they differ only in
//! how they store bytes, check preconditions and deliver events.

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use futures::stream::BoxStream;

use crate::{
    object::{Kind, Object, Resource},
    validation::{self, FieldError},
};

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod memory;

/// Store errors. The variants map to Kubernetes status reasons (NotFound, AlreadyExists,
/// Conflict, Invalid, Gone/Expired, BadRequest).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The object does not exist.
    #[error("{kind} {key:?} not found")]
    NotFound {
        /// Kind.
        kind: Kind,
        /// `namespace/name` or `name`.
        key: String,
    },
    /// An object with this name exists.
    #[error("{kind} {key:?} already exists")]
    AlreadyExists {
        /// Kind.
        kind: Kind,
        /// `namespace/name` or `name`.
        key: String,
    },
    /// The resourceVersion precondition failed: the object was modified.
    #[error(
        "{kind} {key:?}: the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict {
        /// Kind.
        kind: Kind,
        /// `namespace/name` or `name`.
        key: String,
    },
    /// The object failed validation.
    #[error("{kind} {key:?} is invalid: {}", validation::join(.errors))]
    Invalid {
        /// Kind.
        kind: Kind,
        /// `namespace/name` or `name`.
        key: String,
        /// Every field error.
        errors: Vec<FieldError>,
    },
    /// The requested watch revision is compacted: relist and watch again (resync).
    #[error("too old resource version: {requested} (oldest available {oldest})")]
    Expired {
        /// Revision asked for.
        requested: u64,
        /// Oldest revision still available.
        oldest: u64,
    },
    /// The request is malformed (e.g. an unsupported field selector).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The backend failed (connection, encoding).
    #[error("store backend: {0}")]
    Backend(String),
}

/// Result alias for store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Filters for [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only this namespace (`None` = all).
    pub namespace: Option<String>,
    /// Equality label selector.
    pub labels: BTreeMap<String, String>,
    /// Equality field selector (`spec.machinePoolRef.name` → `""` lists unbound machines).
    pub fields: BTreeMap<String, String>,
}

impl ListOptions {
    /// Lists everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Adds a field selector term.
    pub fn field(mut self, path: &str, value: &str) -> Self {
        self.fields.insert(path.to_string(), value.to_string());
        self
    }

    /// Adds a label selector term.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// Restricts to a namespace.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }

    /// Checks that every field selector is supported for `kind`.
    pub fn check(&self, kind: Kind) -> Result<()> {
        for path in self.fields.keys() {
            let supported = match path.as_str() {
                "metadata.name" | "metadata.namespace" => true,
                "spec.machinePoolRef.name" | "spec.machineClassRef.name" => kind == Kind::Machine,
                "spec.volumePoolRef.name" | "spec.volumeClassRef.name" => kind == Kind::Volume,
                "involvedObject.name" | "reason" => kind == Kind::Event,
                _ => false,
            };
            if !supported {
                return Err(Error::BadRequest(format!(
                    "field label not supported for {kind}: {path:?}"
                )));
            }
        }
        Ok(())
    }

    /// Whether `obj` passes the filters (call [`ListOptions::check`] first).
    pub fn matches(&self, obj: &Object) -> bool {
        let meta = obj.metadata();
        if let Some(ns) = &self.namespace
            && !ns.is_empty()
            && &meta.namespace != ns
        {
            return false;
        }
        crate::meta::selector_matches(&self.labels, &meta.labels)
            && self
                .fields
                .iter()
                .all(|(path, want)| obj.field(path) == Some(want.as_str()))
    }
}

/// A list result: the items and the store revision they were read at (watch from it).
#[derive(Debug, Clone)]
pub struct ObjectList {
    /// Matching objects, ordered by namespace and name.
    pub items: Vec<Object>,
    /// Revision of the read; pass it to [`Store::watch`] for a gap-free continuation.
    pub revision: u64,
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum EventType {
    /// Created.
    Added,
    /// Updated (including deletionTimestamp being set).
    Modified,
    /// Removed from the store.
    Deleted,
}

/// One change seen by a watch.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// What happened.
    pub type_: EventType,
    /// The object after the change (for `Deleted`: its last state, resourceVersion = the
    /// deletion revision).
    pub object: Object,
    /// Store revision of the change.
    pub revision: u64,
}

/// One write of [`Store::update_many_from`].
#[derive(Debug, Clone)]
pub struct KnownUpdate {
    /// The object as last returned by the store; its resourceVersion is the precondition.
    pub current: Object,
    /// The desired spec and metadata (status is kept, as in [`Store::update`]), or with
    /// `status_only` the desired status (spec and metadata are kept, as in
    /// [`Store::update_status`]); its own resourceVersion is ignored.
    pub desired: Object,
    /// Write only the status.
    pub status_only: bool,
}

impl KnownUpdate {
    /// The update of `current` to `desired` (spec and metadata), with `current`'s
    /// resourceVersion as the precondition.
    pub fn new(current: Object, mut desired: Object) -> Self {
        desired
            .metadata_mut()
            .resource_version
            .clone_from(&current.metadata().resource_version);
        Self {
            current,
            desired,
            status_only: false,
        }
    }

    /// The status update of `current` to `desired`'s status, with `current`'s
    /// resourceVersion as the precondition.
    pub fn status(current: Object, desired: Object) -> Self {
        Self {
            status_only: true,
            ..Self::new(current, desired)
        }
    }
}

/// A stream of watch events. It ends with `Err(Error::Expired)` when the watcher fell behind
/// the retained history; the caller then relists.
pub type WatchStream = BoxStream<'static, Result<WatchEvent>>;

/// State storage with Kubernetes API-server semantics.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one object.
    async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object>;
    /// Lists objects of a kind with filters; returns the revision of the read.
    async fn list(&self, kind: Kind, options: &ListOptions) -> Result<ObjectList>;
    /// Creates an object: sets uid, generation 1, creationTimestamp; rejects existing names.
    async fn create(&self, obj: Object) -> Result<Object>;
    /// Updates spec and metadata (status is kept). A non-empty resourceVersion is a
    /// precondition (mismatch → [`Error::Conflict`]). Generation is bumped on spec changes.
    /// Removing the last finalizer of a deleting object removes it.
    async fn update(&self, obj: Object) -> Result<Object>;
    /// Updates only the status (spec and metadata are kept), with the same precondition.
    async fn update_status(&self, obj: Object) -> Result<Object>;
    /// Updates several objects atomically (all or nothing); every object must carry a
    /// resourceVersion precondition. Used by schedulers to bind and claim pool capacity in one
    /// step.
    async fn update_many(&self, objs: Vec<Object>) -> Result<Vec<Object>>;
    /// Like [`Store::update_many`], but the caller says what it read: each
    /// [`KnownUpdate::current`] is the object as this store returned it (get, list, watch or an
    /// earlier write), and its resourceVersion is the precondition. A backend may trust
    /// `current` instead of re-reading (etcd: one Txn comparing every key's mod_revision and
    /// nothing else, so a pipelined caller pays one round trip per call). A stale `current`
    /// fails the whole call with [`Error::Conflict`]; nothing is written.
    async fn update_many_from(&self, updates: Vec<KnownUpdate>) -> Result<Vec<Object>>;
    /// Deletes: with finalizers present only sets deletionTimestamp and returns the object
    /// (`Some`); otherwise removes it (`None`). `resource_version` is an optional precondition.
    async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
    ) -> Result<Option<Object>>;
    /// Watches changes of one kind (or all kinds) strictly after `revision`, in revision order.
    /// Fails with [`Error::Expired`] when `revision` is compacted.
    async fn watch(&self, kind: Option<Kind>, revision: u64) -> Result<WatchStream>;
    /// Discards history before `revision` (watches from older revisions expire).
    async fn compact(&self, revision: u64) -> Result<()>;
    /// The current store revision.
    async fn revision(&self) -> Result<u64>;
}

/// Typed convenience methods over any [`Store`].
#[async_trait::async_trait]
pub trait StoreExt: Store {
    /// Typed [`Store::get`].
    async fn get_typed<R: Resource>(&self, namespace: &str, name: &str) -> Result<R> {
        let obj = self.get(R::KIND, namespace, name).await?;
        R::from_object(obj).ok_or_else(|| Error::Backend("store returned another kind".into()))
    }
    /// Typed [`Store::list`] (returns the items and the revision).
    async fn list_typed<R: Resource>(&self, options: &ListOptions) -> Result<(Vec<R>, u64)> {
        let list = self.list(R::KIND, options).await?;
        Ok((
            list.items.into_iter().filter_map(R::from_object).collect(),
            list.revision,
        ))
    }
    /// Typed [`Store::create`].
    async fn create_typed<R: Resource>(&self, obj: R) -> Result<R> {
        let obj = self.create(obj.into_object()).await?;
        R::from_object(obj).ok_or_else(|| Error::Backend("store returned another kind".into()))
    }
    /// Typed [`Store::update`].
    async fn update_typed<R: Resource>(&self, obj: R) -> Result<R> {
        let obj = self.update(obj.into_object()).await?;
        R::from_object(obj).ok_or_else(|| Error::Backend("store returned another kind".into()))
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

#[async_trait::async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object> {
        (**self).get(kind, namespace, name).await
    }
    async fn list(&self, kind: Kind, options: &ListOptions) -> Result<ObjectList> {
        (**self).list(kind, options).await
    }
    async fn create(&self, obj: Object) -> Result<Object> {
        (**self).create(obj).await
    }
    async fn update(&self, obj: Object) -> Result<Object> {
        (**self).update(obj).await
    }
    async fn update_status(&self, obj: Object) -> Result<Object> {
        (**self).update_status(obj).await
    }
    async fn update_many(&self, objs: Vec<Object>) -> Result<Vec<Object>> {
        (**self).update_many(objs).await
    }
    async fn update_many_from(&self, updates: Vec<KnownUpdate>) -> Result<Vec<Object>> {
        (**self).update_many_from(updates).await
    }
    async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
    ) -> Result<Option<Object>> {
        (**self)
            .delete(kind, namespace, name, resource_version)
            .await
    }
    async fn watch(&self, kind: Option<Kind>, revision: u64) -> Result<WatchStream> {
        (**self).watch(kind, revision).await
    }
    async fn compact(&self, revision: u64) -> Result<()> {
        (**self).compact(revision).await
    }
    async fn revision(&self) -> Result<u64> {
        (**self).revision().await
    }
}

/// Opens a store from a URL: `memory` or `etcd://host:port[,host:port...]`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url == "memory" || url == "memory://" {
        return Ok(Arc::new(memory::MemoryStore::new()));
    }
    if let Some(rest) = url.strip_prefix("etcd://") {
        #[cfg(feature = "etcd")]
        {
            let endpoints: Vec<String> = rest.split(',').map(|e| format!("http://{e}")).collect();
            return Ok(Arc::new(
                etcd::EtcdStore::connect(&endpoints, etcd::DEFAULT_PREFIX).await?,
            ));
        }
        #[cfg(not(feature = "etcd"))]
        {
            let _ = rest;
            return Err(Error::BadRequest(
                "this binary was built without the `etcd` feature; rebuild with --features irikit-api/etcd".into(),
            ));
        }
    }
    Err(Error::BadRequest(format!(
        "unknown store {url:?}: want `memory` or `etcd://host:port`"
    )))
}

/// How a write changes the stored state.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Store this object.
    Write(Object),
    /// Remove the object (last finalizer gone while deleting); the value is its last state.
    Remove(Object),
    /// Nothing to write (a repeated delete of a deleting object).
    Unchanged(Object),
}

/// kubectl-style apply: creates `obj`, or updates the stored object of that name (taking its
/// resourceVersion); a non-empty status in `obj` is written too (there may be no controller
/// to write it otherwise).
pub async fn apply(store: &dyn Store, obj: Object) -> Result<Object> {
    let stored = match store.create(obj.clone()).await {
        Ok(created) => created,
        Err(Error::AlreadyExists { .. }) => {
            let meta = obj.metadata();
            let current = store.get(obj.kind(), &meta.namespace, &meta.name).await?;
            let mut next = obj.clone();
            next.metadata_mut()
                .resource_version
                .clone_from(&current.metadata().resource_version);
            store.update(next).await?
        }
        Err(err) => return Err(err),
    };
    if obj.has_status() {
        let mut with_status = stored.clone();
        with_status.copy_status_from(&obj);
        if with_status != stored {
            return store.update_status(with_status).await;
        }
    }
    Ok(stored)
}

/// Now as RFC 3339 seconds (the Kubernetes `metav1.Time` wire form).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn new_uid() -> String {
    let bits: u128 = rand::random();
    let bits = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn invalid(obj: &Object, errors: Vec<FieldError>) -> Error {
    Error::Invalid {
        kind: obj.kind(),
        key: obj.key(),
        errors,
    }
}

/// Create rules: validation, uid, generation 1, creationTimestamp, no deletionTimestamp.
pub(crate) fn prepare_create(mut obj: Object) -> Result<Object> {
    let errors = validation::validate(&obj);
    if !errors.is_empty() {
        return Err(invalid(&obj, errors));
    }
    let meta = obj.metadata_mut();
    meta.uid = new_uid();
    meta.generation = 1;
    meta.creation_timestamp = Some(now_rfc3339());
    meta.deletion_timestamp = None;
    meta.resource_version.clear();
    Ok(obj)
}

/// Update rules shared by the backends. `status_only` selects the status subresource.
pub(crate) fn prepare_update(old: &Object, new: Object, status_only: bool) -> Result<Outcome> {
    if old.kind() != new.kind() {
        return Err(Error::BadRequest(format!(
            "kind mismatch: {} vs {}",
            old.kind(),
            new.kind()
        )));
    }
    let precondition = &new.metadata().resource_version;
    if !precondition.is_empty() && *precondition != old.metadata().resource_version {
        return Err(Error::Conflict {
            kind: old.kind(),
            key: old.key(),
        });
    }
    let mut result = if status_only {
        let mut result = old.clone();
        result.copy_status_from(&new);
        result
    } else {
        let mut result = new;
        if result.has_status() {
            result.copy_status_from(old);
        }
        let spec_changed = result.spec_differs(old);
        let old_meta = old.metadata();
        let meta = result.metadata_mut();
        meta.uid.clone_from(&old_meta.uid);
        meta.creation_timestamp
            .clone_from(&old_meta.creation_timestamp);
        meta.deletion_timestamp
            .clone_from(&old_meta.deletion_timestamp);
        meta.generation = old_meta.generation + i64::from(spec_changed);
        result
    };
    result
        .metadata_mut()
        .resource_version
        .clone_from(&old.metadata().resource_version);
    let errors = validation::validate_update(old, &result);
    if !errors.is_empty() {
        return Err(invalid(&result, errors));
    }
    let meta = result.metadata();
    if meta.is_deleting() && meta.finalizers.is_empty() {
        return Ok(Outcome::Remove(result));
    }
    Ok(Outcome::Write(result))
}

/// Delete rules: finalizers present → set deletionTimestamp; otherwise remove.
pub(crate) fn prepare_delete(old: &Object, precondition: Option<&str>) -> Result<Outcome> {
    if let Some(rv) = precondition
        && !rv.is_empty()
        && rv != old.metadata().resource_version
    {
        return Err(Error::Conflict {
            kind: old.kind(),
            key: old.key(),
        });
    }
    if old.metadata().finalizers.is_empty() {
        return Ok(Outcome::Remove(old.clone()));
    }
    if old.metadata().is_deleting() {
        return Ok(Outcome::Unchanged(old.clone()));
    }
    let mut obj = old.clone();
    obj.metadata_mut().deletion_timestamp = Some(now_rfc3339());
    Ok(Outcome::Write(obj))
}

#[cfg(test)]
mod tests {
    #[test]
    fn uid_is_v4() {
        let uid = super::new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert!(matches!(&uid[19..20], "8" | "9" | "a" | "b"), "{uid}");
    }
}
