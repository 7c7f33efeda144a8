//! Reservations through the machinepoollet (IronCore IEP-11, reference §6.3): the api
//! Reservations that ask this pool are passed down to the runtime's irikit extension
//! (`irikit.reservation.v1alpha1.ReservationRuntime`), and the runtime's answer comes back
//! up as this pool's entry in `status.pools`.
//!
//! - **Probe.** Every relist ([`reservation_relist`]) calls `ListReservations`; `Unimplemented`
//!   means the runtime has no reservations. The answer is written on the MachinePool as the
//!   annotation `reservation.irikit.dev/supported: "true"|"false"` (the reservation-mode
//!   scheduler falls back to best-effort for pools without `"true"`). A runtime without
//!   reservations gets no `status.pools` entry from this pool.
//! - **Create.** [`ReservationReconciler`] (key `namespace/name`): a Reservation whose
//!   `spec.pools` is empty or names this pool is created on the runtime once, labelled with
//!   the api Reservation's uid, namespace and name (`reservation.irikit.dev/reservation-*`;
//!   a reconcile looks for that uid before creating, unless the poollet already knows every
//!   runtime reservation: after a relist over a synced cache and until a create ends in
//!   doubt, an unknown uid has none, and the create saves the round trip). Its spec is the api spec through
//!   [`irikit_api::reservation::ReservationSpec::to_iri`] (a spec the IRI extension cannot
//!   carry, or that the runtime answers `InvalidArgument` for, is reported `Rejected`).
//! - **State.** The runtime's state (`PENDING`, `ACCEPTED`, `REJECTED`, `BOUND`) is written as
//!   `{name: <pool>, state}` into `status.pools`, keeping the other pools' entries (a write
//!   conflict re-reads and merges again). A runtime that answers `PENDING` (a broker deciding
//!   below) is polled by the relist, which lists every runtime reservation each period and
//!   requeues the api Reservations whose state changed.
//! - **Delete.** An api Reservation that is gone (or deleting), or no longer asks this pool
//!   (the reservation-mode scheduler narrows `spec.pools` to the pool it bound the Machine to),
//!   releases its hold: `DeleteReservation` of every runtime reservation labelled with its
//!   namespace and name. This pool's entry in `status.pools` keeps its last answer.
//!   The relist is the backstop: a runtime reservation whose api Reservation (by uid) is gone
//!   is deleted once the watch cache is synced, so holds left while the poollet was down are
//!   released too.
//! - **Machines.** A Machine annotated `reservation.irikit.dev/name` is created with the IRI
//!   annotation `reservation.irikit.dev/id` = the runtime reservation of that Reservation here
//!   ([`ReservationReconciler::runtime_id_for`]), so the runtime places it on the held
//!   capacity; the runtime then reports the reservation `BOUND`, which travels up as `Bound`.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use iri_spec::irikit::reservation::v1alpha1::{
    self as rsv, reservation_runtime_client::ReservationRuntimeClient,
};
use iri_spec::meta::v1alpha1 as meta;
use irikit_api::{
    Kind, Object, Resource, Store, StoreExt,
    compute::MachinePool,
    reservation::{
        IRI_RESERVATION_NAME_LABEL, IRI_RESERVATION_NAMESPACE_LABEL, IRI_RESERVATION_UID_LABEL,
        RESERVATION_SUPPORTED_ANNOTATION, Reservation, ReservationPoolStatus, ReservationState,
    },
    store,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::{
    controller::{Action, ObjectCache, ObjectRef, Reconciler, WorkQueue},
    error::{Error, Result, rpc},
};

/// Settings of the reservation pass-through.
#[derive(Debug, Clone)]
pub struct ReservationConfig {
    /// The pool this poollet answers for.
    pub pool_name: String,
    /// Timeout of every runtime RPC.
    pub rpc_timeout: Duration,
    /// Interval of the runtime reservation relist (probe, PENDING poll, GC).
    pub relist_period: Duration,
}

/// One runtime reservation as the poollet last saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    id: String,
    uid: String,
    namespace: String,
    name: String,
    state: i32,
    /// Its state may be out of date (a machine was created against it): read it afresh.
    stale: bool,
}

fn seen(r: &rsv::Reservation) -> Option<Seen> {
    let md = r.metadata.as_ref()?;
    let label = |k: &str| md.labels.get(k).cloned();
    Some(Seen {
        id: md.id.clone(),
        uid: label(IRI_RESERVATION_UID_LABEL)?,
        namespace: label(IRI_RESERVATION_NAMESPACE_LABEL)?,
        name: label(IRI_RESERVATION_NAME_LABEL)?,
        state: r.status.as_ref().map_or(0, |s| s.state),
        stale: false,
    })
}

/// Passes api Reservations down to the runtime and their state back up (see the module
/// documentation). Shared by the reconcile loop, the relist and the Machine reconciler.
pub struct ReservationReconciler {
    store: Arc<dyn Store>,
    client: ReservationRuntimeClient<Channel>,
    config: ReservationConfig,
    /// The watch cache of Reservations (read once synced).
    cache: ObjectCache,
    /// Whether the runtime serves reservations (`None` until the first probe).
    supported: Mutex<Option<bool>>,
    /// Whether the pool carries the current `supported` value.
    announced: AtomicBool,
    /// api Reservation uid → the runtime reservation created for it.
    runtime: Mutex<HashMap<String, Seen>>,
    /// Whether `runtime` knows every runtime reservation this pool has: a relist over a synced
    /// cache ran, and no CreateReservation since ended in doubt (an error after which the
    /// runtime may hold one anyway). While true, a reconcile creates without listing first.
    complete: AtomicBool,
    /// Bumped by every CreateReservation that ended in doubt.
    doubts: AtomicU64,
}

impl ReservationReconciler {
    /// A reconciler for `config.pool_name` on the runtime behind `channel`, reading
    /// Reservations from `cache` once it is synced.
    pub fn new(
        store: Arc<dyn Store>,
        channel: Channel,
        config: ReservationConfig,
        cache: ObjectCache,
    ) -> Self {
        Self {
            store,
            client: ReservationRuntimeClient::new(channel)
                .max_decoding_message_size(crate::MAX_RESPONSE_BYTES),
            config,
            cache,
            supported: Mutex::new(None),
            announced: AtomicBool::new(false),
            runtime: Mutex::default(),
            complete: AtomicBool::new(false),
            doubts: AtomicU64::new(0),
        }
    }

    /// The Reservation watch cache this reconciler reads.
    pub fn cache(&self) -> ObjectCache {
        self.cache.clone()
    }

    /// Whether the runtime serves reservations (`None` before the first probe).
    pub fn supported(&self) -> Option<bool> {
        *self
            .supported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn runtime(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.runtime.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn get(&self, key: &ObjectRef) -> Result<Option<Reservation>> {
        if self.cache.is_synced() {
            return Ok(self.cache.get(key).and_then(Reservation::from_object));
        }
        match self
            .store
            .get_typed::<Reservation>(&key.namespace, &key.name)
            .await
        {
            Ok(r) => Ok(Some(r)),
            Err(store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// The runtime reservations labelled with `pairs`, fresh from the runtime.
    async fn list(&self, pairs: &[(&str, &str)]) -> Result<Vec<rsv::Reservation>> {
        let mut client = self.client.clone();
        let filter = rsv::ReservationFilter {
            id: String::new(),
            label_selector: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        Ok(rpc(
            "ListReservations",
            self.config.rpc_timeout,
            client.list_reservations(rsv::ListReservationsRequest {
                filter: Some(filter),
            }),
        )
        .await?
        .reservations)
    }

    async fn delete_runtime(&self, id: &str) -> Result<()> {
        let mut client = self.client.clone();
        match rpc(
            "DeleteReservation",
            self.config.rpc_timeout,
            client.delete_reservation(rsv::DeleteReservationRequest {
                reservation_id: id.to_owned(),
            }),
        )
        .await
        {
            Ok(_) => {
                info!(reservation_id = %id, "runtime reservation deleted (hold released)");
                Ok(())
            }
            Err(err) if err.code() == Some(tonic::Code::NotFound) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Deletes every runtime reservation of the api Reservation `key` (gone or deleting).
    async fn release(&self, key: &ObjectRef) -> Result<()> {
        let listed = self
            .list(&[
                (IRI_RESERVATION_NAMESPACE_LABEL, &key.namespace),
                (IRI_RESERVATION_NAME_LABEL, &key.name),
            ])
            .await?;
        for r in listed {
            if let Some(s) = seen(&r) {
                self.delete_runtime(&s.id).await?;
                self.runtime().remove(&s.uid);
            }
        }
        Ok(())
    }

    /// The runtime reservation of api Reservation `r` here, created when there is none.
    async fn ensure_runtime(&self, r: &Reservation) -> Result<Option<Seen>> {
        let uid = &r.metadata.uid;
        let known = self.runtime().get(uid).cloned();
        if let Some(s) = known.as_ref().filter(|s| !s.stale) {
            return Ok(Some(s.clone()));
        }
        // Unknown here: the runtime has none for it unless `runtime` may be incomplete (a
        // poollet restarted before its first relist, or a create that ended in doubt).
        let mut listed: Vec<Seen> = if known.is_none() && self.complete.load(Ordering::Acquire) {
            Vec::new()
        } else {
            self.list(&[(IRI_RESERVATION_UID_LABEL, uid)])
                .await?
                .iter()
                .filter_map(seen)
                .collect()
        };
        listed.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(s) = listed.first().cloned() {
            // Duplicates (a crash between create and record): keep one, release the others.
            for extra in listed.iter().skip(1) {
                self.delete_runtime(&extra.id).await?;
            }
            self.runtime().insert(uid.clone(), s.clone());
            return Ok(Some(s));
        }
        let spec = match r.spec.to_iri() {
            Ok(spec) => spec,
            Err(err) => {
                warn!(reservation = %r.metadata.name, error = %err, "the reservation cannot be passed to the runtime; Rejected");
                return Ok(None);
            }
        };
        let labels = HashMap::from([
            (IRI_RESERVATION_UID_LABEL.to_owned(), uid.clone()),
            (
                IRI_RESERVATION_NAMESPACE_LABEL.to_owned(),
                r.metadata.namespace.clone(),
            ),
            (
                IRI_RESERVATION_NAME_LABEL.to_owned(),
                r.metadata.name.clone(),
            ),
        ]);
        let mut client = self.client.clone();
        let created = rpc(
            "CreateReservation",
            self.config.rpc_timeout,
            client.create_reservation(rsv::CreateReservationRequest {
                reservation: Some(rsv::Reservation {
                    metadata: Some(meta::ObjectMetadata {
                        labels,
                        ..meta::ObjectMetadata::default()
                    }),
                    spec: Some(spec),
                    status: None,
                }),
            }),
        )
        .await;
        let created = match created {
            Ok(res) => res.reservation,
            Err(err) if err.code() == Some(tonic::Code::InvalidArgument) => {
                warn!(reservation = %r.metadata.name, error = %err, "the runtime refused the reservation's spec; Rejected");
                return Ok(None);
            }
            Err(err) => {
                // The runtime may have created it all the same: list before creating again.
                self.doubts.fetch_add(1, Ordering::AcqRel);
                self.complete.store(false, Ordering::Release);
                return Err(err);
            }
        };
        let s = created
            .as_ref()
            .and_then(seen)
            .filter(|s| !s.id.is_empty())
            .ok_or_else(|| {
                Error::BadResponse(
                    "CreateReservation without metadata.id or the labels it was sent".into(),
                )
            })?;
        info!(reservation = %r.metadata.name, reservation_id = %s.id, state = s.state, "reservation passed to the runtime");
        self.runtime().insert(uid.clone(), s.clone());
        Ok(Some(s))
    }

    /// Writes `state` as this pool's entry of the Reservation's status (other pools' entries
    /// kept; a conflict re-reads and merges again).
    async fn write_state(&self, r: &Reservation, state: ReservationState) -> Result<()> {
        let pool = &self.config.pool_name;
        let mut current = r.clone();
        for _ in 0..5 {
            if current.pool_state(pool) == Some(state) {
                return Ok(());
            }
            let mut desired = current.clone();
            desired.status.pools.retain(|p| &p.name != pool);
            desired.status.pools.push(ReservationPoolStatus {
                name: pool.clone(),
                state,
            });
            desired.status.pools.sort_by(|a, b| a.name.cmp(&b.name));
            match self.store.update_status(desired.into_object()).await {
                Ok(_) => {
                    debug!(reservation = %r.metadata.name, %state, "reservation state written");
                    return Ok(());
                }
                Err(store::Error::Conflict { .. }) => {
                    current = self
                        .store
                        .get_typed::<Reservation>(&r.metadata.namespace, &r.metadata.name)
                        .await?;
                    if current.metadata.uid != r.metadata.uid {
                        return Ok(());
                    }
                }
                Err(store::Error::NotFound { .. }) => return Ok(()),
                Err(err) => return Err(err.into()),
            }
        }
        Err(Error::Store(store::Error::Conflict {
            kind: Kind::Reservation,
            key: format!("{}/{}", r.metadata.namespace, r.metadata.name),
        }))
    }

    /// The runtime reservation id a Machine annotated with Reservation `name` (in
    /// `namespace`) is created against here: that of an ACCEPTED runtime reservation for the
    /// Reservation, `None` when there is none (the Machine is then created without one).
    pub async fn runtime_id_for(&self, namespace: &str, name: &str) -> Option<String> {
        if self.supported() != Some(true) {
            return None;
        }
        let accepted = rsv::ReservationState::ReservationAccepted as i32;
        let r = self
            .get(&ObjectRef::new(namespace, name))
            .await
            .ok()
            .flatten();
        if let Some(r) = &r
            && let Some(s) = self.runtime().get(&r.metadata.uid)
            && s.state == accepted
            && !s.stale
        {
            return Some(s.id.clone());
        }
        // Not (yet) recorded: ask the runtime.
        let listed = self
            .list(&[
                (IRI_RESERVATION_NAMESPACE_LABEL, namespace),
                (IRI_RESERVATION_NAME_LABEL, name),
            ])
            .await
            .ok()?;
        listed
            .iter()
            .filter_map(seen)
            .filter(|s| r.as_ref().is_none_or(|r| r.metadata.uid == s.uid))
            .find(|s| s.state == accepted)
            .map(|s| s.id)
    }

    /// Marks what was recorded for the Reservation `key` stale, so that its next reconcile
    /// reads the runtime's state afresh (after a machine was created against it: BOUND now).
    pub fn refresh(&self, key: &ObjectRef) {
        for s in self.runtime().values_mut() {
            if s.namespace == key.namespace && s.name == key.name {
                s.stale = true;
            }
        }
    }

    /// Whether a runtime reservation for the api Reservation with `uid` is known here.
    pub fn holds_for(&self, uid: &str) -> bool {
        self.runtime().contains_key(uid)
    }

    /// Records a runtime state change seen by the relist; returns whether the api status
    /// may now differ.
    fn observe(&self, s: Seen) -> bool {
        let mut runtime = self.runtime();
        let changed = runtime.get(&s.uid) != Some(&s);
        runtime.insert(s.uid.clone(), s);
        changed
    }

    /// Writes the `supported` annotation on the pool when it differs; false while the pool
    /// does not exist yet (or kept conflicting), so the next round tries again.
    async fn annotate_pool(&self, supported: bool) -> Result<bool> {
        let value = supported.to_string();
        for _ in 0..5 {
            let mut pool = match self
                .store
                .get_typed::<MachinePool>("", &self.config.pool_name)
                .await
            {
                Ok(pool) => pool,
                Err(store::Error::NotFound { .. }) => return Ok(false),
                Err(err) => return Err(err.into()),
            };
            if pool
                .metadata
                .annotations
                .get(RESERVATION_SUPPORTED_ANNOTATION)
                == Some(&value)
            {
                return Ok(true);
            }
            pool.metadata
                .annotations
                .insert(RESERVATION_SUPPORTED_ANNOTATION.to_owned(), value.clone());
            match self.store.update(pool.into_object()).await {
                Ok(_) => {
                    info!(pool = %self.config.pool_name, supported, "pool reservation support announced");
                    return Ok(true);
                }
                Err(store::Error::Conflict { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(false)
    }

    /// One probe + relist round: the supported annotation, state changes (returned as keys
    /// to reconcile) and runtime reservations whose api Reservation is gone (deleted).
    async fn relist_once(&self) -> Result<Vec<ObjectRef>> {
        let doubts = self.doubts.load(Ordering::Acquire);
        let synced = self.cache.is_synced();
        // What was known before the listing: a reservation created while it is under way is
        // missing from it, but not gone.
        let known: std::collections::HashSet<String> = self.runtime().keys().cloned().collect();
        let mut client = self.client.clone();
        let listed = rpc(
            "ListReservations",
            self.config.rpc_timeout,
            client.list_reservations(rsv::ListReservationsRequest { filter: None }),
        )
        .await;
        let listed = match listed {
            Ok(res) => {
                self.set_supported(true).await?;
                res.reservations
            }
            Err(err) if err.code() == Some(tonic::Code::Unimplemented) => {
                self.set_supported(false).await?;
                return Ok(Vec::new());
            }
            Err(err) => return Err(err),
        };
        let mut keys = Vec::new();
        let mut live = std::collections::HashSet::new();
        for s in listed.iter().filter_map(seen) {
            live.insert(s.uid.clone());
            let key = ObjectRef::new(s.namespace.clone(), s.name.clone());
            // The pool's state in the cached Reservation (itself `None` before the pool
            // answered), when that Reservation is this one, live and asking this pool; read
            // under the cache's lock (a relist every period per poollet must not clone every
            // Reservation).
            let api_state = self.cache.with(&key, |obj| match obj {
                Object::Reservation(r)
                    if r.metadata.uid == s.uid
                        && !r.metadata.is_deleting()
                        && r.targets(&self.config.pool_name) =>
                {
                    Some(r.pool_state(&self.config.pool_name))
                }
                _ => None,
            });
            match api_state.flatten() {
                Some(api_state) => {
                    let state = ReservationState::from_iri(s.state);
                    if self.observe(s) || state != api_state {
                        keys.push(key);
                    }
                }
                _ if self.cache.is_synced() => {
                    // Its Reservation is gone (or was re-created, or no longer asks this
                    // pool): release the hold.
                    self.delete_runtime(&s.id).await?;
                    self.runtime().remove(&s.uid);
                }
                _ => {}
            }
        }
        // Forget what the runtime no longer lists (a restarted runtime): reconciles re-create.
        let gone: Vec<String> = self
            .runtime()
            .keys()
            .filter(|uid| known.contains(*uid) && !live.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            self.runtime().remove(&uid);
            keys.extend(
                self.cache
                    .filter_map(|obj| (obj.metadata().uid == uid).then(|| ObjectRef::of(obj))),
            );
        }
        // Every runtime reservation is now known (those of a synced cache's Reservations were
        // recorded, the others released), unless a create ended in doubt meanwhile.
        if synced && self.doubts.load(Ordering::Acquire) == doubts {
            self.complete.store(true, Ordering::Release);
        }
        // Reservations asking this pool that it has not answered yet (missed events).
        keys.extend(self.cache.filter_map(|obj| match obj {
            Object::Reservation(r)
                if r.targets(&self.config.pool_name)
                    && r.pool_state(&self.config.pool_name).is_none()
                    && !r.metadata.is_deleting() =>
            {
                Some(ObjectRef::of(obj))
            }
            _ => None,
        }));
        Ok(keys)
    }

    async fn set_supported(&self, supported: bool) -> Result<()> {
        let before = {
            let mut s = self
                .supported
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            s.replace(supported)
        };
        // Announced once the pool carries it: a pool created after the first probe is
        // annotated at the next round.
        if before != Some(supported) {
            self.announced.store(false, Ordering::Relaxed);
        }
        if !self.announced.load(Ordering::Relaxed) && self.annotate_pool(supported).await? {
            self.announced.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Reconciler<ObjectRef> for ReservationReconciler {
    type Error = Error;

    async fn reconcile(&self, key: &ObjectRef) -> Result<Action> {
        match self.supported() {
            None => return Ok(Action::requeue(self.config.relist_period)),
            Some(false) => return Ok(Action::await_change()),
            Some(true) => {}
        }
        let Some(r) = self.get(key).await? else {
            self.release(key).await?;
            return Ok(Action::await_change());
        };
        if r.metadata.is_deleting() || !r.targets(&self.config.pool_name) {
            // Deleting, or no longer asking this pool (the scheduler narrows a Reservation to
            // the pool it bound the Machine to): the hold here ends.
            if r.metadata.is_deleting() || self.holds_for(&r.metadata.uid) {
                self.release(key).await?;
            }
            return Ok(Action::await_change());
        }
        let state = match self.ensure_runtime(&r).await? {
            Some(s) => ReservationState::from_iri(s.state).unwrap_or(ReservationState::Pending),
            None => ReservationState::Rejected,
        };
        self.write_state(&r, state).await?;
        Ok(match state {
            // A runtime deciding later: the relist polls it.
            ReservationState::Pending => Action::requeue(self.config.relist_period),
            _ => Action::await_change(),
        })
    }
}

/// Every `config.relist_period`: probes the runtime, polls its reservations and releases the
/// holds of Reservations that are gone; enqueues the Reservations whose state changed.
pub async fn reservation_relist(
    reconciler: Arc<ReservationReconciler>,
    queue: WorkQueue<ObjectRef>,
    token: CancellationToken,
) {
    let mut ticks = crate::runtime::Ticks::new(reconciler.config.relist_period, token);
    while ticks.tick().await {
        let Some(round) = ticks.run(reconciler.relist_once()).await else {
            return;
        };
        match round {
            Ok(keys) => {
                for key in keys {
                    queue.add(key);
                }
            }
            Err(err) => warn!(error = %err, "runtime reservation relist failed"),
        }
    }
}

/// Whether `obj` is a Reservation that asks `pool`.
pub fn asks_pool(obj: &Object, pool: &str) -> bool {
    matches!(obj, Object::Reservation(r) if r.targets(pool))
}
