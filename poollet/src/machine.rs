//! The Machine reconciler (reference §3.4–3.7): finalizer first; prerequisites (the class
//! exists and maps, the ignition Secret if referenced, every volume resolves — storage volumes
//! through the claim flow of [`volumes`]); CreateMachine with the §3.1 labels and
//! annotations and the **requested** power (fixes §8.7); the update pass (power, the generation
//! handshake of §3.4, the volume sync of §3.6 with UpdateVolume for online resizes); status propagation (state with STOPPED mapped to `Shutdown` (§8.1),
//! machineID `<runtime_name>://<id>`, observedGeneration, the Ready / VolumesReady /
//! NetworkInterfacesReady conditions); delete through the finalizer; and orphan GC.
//!
//! Orphan GC (fixes §8.4): every reconcile of `namespace/name` lists the IRI machines labelled
//! with that namespace and name, and deletes those whose `machine-uid` label is not the UID of
//! the Machine that now has that name (or all of them when the Machine is gone). The runtime
//! relist ([`runtime_relist`]) enqueues the key of every IRI machine it sees, so orphans left
//! behind while the poollet was down are found on the first relist. Since GC runs inside the
//! reconcile of the key, it never races with the create of the same key.
//!
//! Hot path: once a label list (or this reconciler's own create) has shown exactly one IRI
//! machine for the name, with the Machine's uid, later reconciles read that machine by id
//! instead of listing by labels (runtimes scan every machine for a label filter). The
//! knowledge is dropped when the relist sees any other IRI machine with that name (a new
//! orphan or duplicate), when the read by id misses, and on restart; the next reconcile lists
//! by labels again. A create decision is always made on a fresh label list.
//!
//! A runtime that drops the labels it is given (the Machine's namespace, name and uid) would
//! make every reconcile find nothing and create another machine, each leaking: when the
//! machine `status.machineID` names is still listed without the uid label, the reconcile
//! records a `RuntimeLabelsLost` Warning and fails (backoff) instead, and the finalizer
//! deletes that machine as well. IronCore's poollet creates again.
//!
//! Two IRI machines with the Machine's UID (a crash between create and status write of an
//! older poollet, say) are handled: the oldest is kept, the others are deleted.

use std::{collections::HashMap, sync::Arc, time::Duration};

use base64::Engine;
use iri_spec::{
    keys,
    kind::IriKind,
    machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient},
    meta::v1alpha1 as meta,
};
use irikit_api::{
    Kind, Resource, Store, StoreExt,
    compute::{self, Machine, MachineClass},
    core::Secret,
    store::{self, KnownUpdate},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{info, warn};

pub mod volumes;

use crate::{
    controller::{Action, ObjectCache, ObjectRef, Reconciler},
    error::{ClassMapError, Error, Result, rpc},
    events,
    flavor::MachineFlavor,
    object::{OwnWrites, get_optional, has_finalizer, involved},
    pool::{RuntimeView, capabilities_of, map_class},
    runtime::{self, NameLabels, not_found_is_gone, probe_once, reduce},
};

mod labels;
mod nic;
mod status;

pub use status::machine_state;

/// Default ignition key in the Secret.
pub const DEFAULT_IGNITION_KEY: &str = "ignition.yaml";

/// Settings of the Machine reconciler.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// The pool whose machines this poollet reconciles.
    pub pool_name: String,
    /// Timeout of every runtime RPC.
    pub rpc_timeout: Duration,
    /// Requeue delay while a machine is still converging (Pending, status behind).
    pub converging_requeue: Duration,
    /// Requeue delay of a converged machine (level-triggered resync).
    pub resync: Duration,
    /// Requeue delay while a prerequisite (class, ignition Secret) is missing.
    pub prerequisite_requeue: Duration,
}

impl MachineConfig {
    /// Defaults for `pool_name`.
    pub fn new(pool_name: impl Into<String>) -> Self {
        Self {
            pool_name: pool_name.into(),
            rpc_timeout: Duration::from_secs(5),
            converging_requeue: Duration::from_millis(250),
            resync: Duration::from_secs(60),
            prerequisite_requeue: Duration::from_secs(10),
        }
    }
}

/// Reconciles Machines bound to one pool against the runtime.
pub struct MachineReconciler {
    store: Arc<dyn Store>,
    client: MachineRuntimeClient<Channel>,
    runtime_name: String,
    view: RuntimeView,
    config: MachineConfig,
    /// Machine key → resourceVersions of this reconciler's writes of it whose watch events
    /// have not been seen yet (a reconcile writes the finalizer and then the status).
    own_writes: OwnWrites,
    /// The poollet's watch cache of its pool's Machines, read instead of the store once synced
    /// (as controller-runtime's cached client does); a stale read only costs a Conflict.
    machines: Option<ObjectCache>,
    /// The watch cache of MachineClasses, likewise.
    classes: Option<ObjectCache>,
    /// Machine key → (Machine uid, IRI machine id) when a label list (or this reconciler's
    /// create) showed exactly that one IRI machine for the name; see [`Self::observe_runtime`].
    known: std::sync::Mutex<HashMap<ObjectRef, (String, String)>>,
    /// The reservation pass-through: a Machine annotated `reservation.irikit.dev/name` is
    /// created against its runtime reservation (see [`crate::reservation`]).
    reservations: Option<(
        Arc<crate::reservation::ReservationReconciler>,
        crate::controller::WorkQueue<ObjectRef>,
    )>,
}

fn label_filter(pairs: &[(&str, &str)]) -> machine::ListMachinesRequest {
    machine::ListMachinesRequest {
        filter: Some(machine::MachineFilter {
            id: String::new(),
            label_selector: pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        }),
    }
}

/// The labels that name the Machine of an IRI machine.
pub const MACHINE_NAME_LABELS: NameLabels = NameLabels {
    namespace: keys::MACHINE_NAMESPACE_LABEL,
    name: keys::MACHINE_NAME_LABEL,
};

fn metadata(m: &machine::Machine) -> meta::ObjectMetadata {
    m.metadata.clone().unwrap_or_default()
}

fn annotation_i64(m: &machine::Machine, key: &'static str) -> Result<i64> {
    m.annotation(key)
        .and_then(|v| v.parse().ok())
        .ok_or(Error::Annotation {
            machine_id: m.id().to_string(),
            key,
        })
}

fn desired_power(m: &Machine) -> machine::Power {
    match m.spec.power {
        compute::Power::On => machine::Power::On,
        compute::Power::Off => machine::Power::Off,
    }
}

enum Prerequisites {
    Ready(Box<machine::Machine>),
    /// A reason (IronCore's event reason) and a message.
    Waiting(&'static str, String),
}

/// Event reason: the MachineClass is missing.
pub const REASON_MACHINE_CLASS_NOT_READY: &str = "MachineClassNotReady";
/// Event reason: the ignition Secret or its key is missing.
pub const REASON_IGNITION_NOT_READY: &str = "IgnitionNotReady";
/// Event reason: a volume cannot be resolved.
pub const REASON_VOLUME_NOT_READY: &str = "VolumeNotReady";
/// Event reason: a network interface cannot be resolved.
pub const REASON_NETWORK_INTERFACE_NOT_READY: &str = "NetworkInterfaceNotReady";
/// Event reason (Warning): the runtime lists the machine created for the Machine without
/// the labels it was created with; no other machine is created.
pub const REASON_RUNTIME_LABELS_LOST: &str = "RuntimeLabelsLost";
/// The component recorded as the source of the poollet's Events.
pub const EVENT_COMPONENT: &str = "machinepoollet";

impl MachineReconciler {
    /// A reconciler that talks to the runtime through `client`; `runtime_name` is the
    /// `Version` answer used in `machineID`.
    pub fn new(
        store: Arc<dyn Store>,
        client: MachineRuntimeClient<Channel>,
        runtime_name: impl Into<String>,
        view: RuntimeView,
        config: MachineConfig,
    ) -> Self {
        Self {
            store,
            client,
            runtime_name: runtime_name.into(),
            view,
            config,
            own_writes: OwnWrites::default(),
            known: std::sync::Mutex::default(),
            machines: None,
            classes: None,
            reservations: None,
        }
    }

    /// Creates Machines annotated `reservation.irikit.dev/name` against their runtime
    /// reservation, and requeues the Reservation in `queue` after such a create (its state
    /// turns Bound).
    pub fn with_reservations(
        mut self,
        reservations: Arc<crate::reservation::ReservationReconciler>,
        queue: crate::controller::WorkQueue<ObjectRef>,
    ) -> Self {
        self.reservations = Some((reservations, queue));
        self
    }

    /// The runtime reservation id `m` is created against (`None`: an ordinary create).
    async fn reservation_id(&self, m: &Machine) -> Option<(String, ObjectRef)> {
        let (reservations, _) = self.reservations.as_ref()?;
        let name = m
            .metadata
            .annotations
            .get(irikit_api::reservation::RESERVATION_NAME_ANNOTATION)?;
        let id = reservations
            .runtime_id_for(&m.metadata.namespace, name)
            .await;
        if id.is_none() {
            info!(reservation = %name, "no accepted runtime reservation for the Machine's Reservation here; creating without one");
        }
        Some((
            id?,
            ObjectRef::new(m.metadata.namespace.clone(), name.clone()),
        ))
    }

    /// Reads Machines from `machines` and MachineClasses from `classes` (watch caches kept by
    /// [`crate::controller::watch`]) once they are synced, instead of from the store.
    pub fn with_caches(mut self, machines: ObjectCache, classes: ObjectCache) -> Self {
        self.machines = Some(machines);
        self.classes = Some(classes);
        self
    }

    /// The Machine `key` (`None` if it does not exist), from the cache when it is synced.
    async fn get_machine(&self, key: &ObjectRef) -> Result<Option<Machine>> {
        if let Some(cache) = self.machines.as_ref().filter(|c| c.is_synced()) {
            return Ok(cache.get(key).and_then(Machine::from_object));
        }
        get_optional(self.store.as_ref(), &key.namespace, &key.name).await
    }

    /// Writes `desired` over `current` (the version this reconciler read or wrote last) in
    /// one store call without a re-read: spec and metadata, or with `status_only` the status.
    /// A stale `current` fails with Conflict and the reconcile is retried.
    async fn write_known(
        &self,
        current: &Machine,
        desired: Machine,
        status_only: bool,
    ) -> Result<Machine> {
        let current = current.clone().into_object();
        let desired = desired.into_object();
        let update = if status_only {
            KnownUpdate::status(current, desired)
        } else {
            KnownUpdate::new(current, desired)
        };
        let written = self
            .store
            .update_many_from(vec![update])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::BadResponse("the store wrote nothing".into()))?;
        self.own_writes.note(&written);
        Machine::from_object(written)
            .ok_or_else(|| Error::BadResponse("the store returned another kind".into()))
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef, (String, String)>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells the reconciler that the runtime relist saw IRI machine `id` labelled with `key`'s
    /// namespace and name (appeared, changed or vanished). Unless it is the one IRI machine
    /// the reconciler knows for `key`, the knowledge is dropped, so the next reconcile of
    /// `key` lists by labels again and collects orphans and duplicates.
    pub fn observe_runtime(&self, key: &ObjectRef, id: &str) {
        let mut known = self.known();
        if known.get(key).is_some_and(|(_, known_id)| known_id != id) {
            known.remove(key);
        }
    }

    /// The IRI machines labelled with `key`'s namespace and name. When the reconciler knows
    /// the one IRI machine of the Machine `uid` (it created it or a label list showed it alone)
    /// and the relist has seen no other, that machine is read by id instead of a label list:
    /// runtimes filter labels by scanning every machine, and this is the hot path.
    async fn list_for(&self, key: &ObjectRef, uid: Option<&str>) -> Result<Vec<machine::Machine>> {
        let known_id = self
            .known()
            .get(key)
            .filter(|(known_uid, _)| Some(known_uid.as_str()) == uid)
            .map(|(_, id)| id.clone());
        if let Some(id) = known_id {
            if let Some(iri) = self.get_by_id(&id).await?
                && iri.label(keys::MACHINE_UID_LABEL) == uid
            {
                return Ok(vec![iri]);
            }
            self.known().remove(key);
        }
        let listed = self
            .list(label_filter(&[
                (keys::MACHINE_NAMESPACE_LABEL, &key.namespace),
                (keys::MACHINE_NAME_LABEL, &key.name),
            ]))
            .await?;
        match (uid, listed.as_slice()) {
            (Some(uid), [one]) if one.label(keys::MACHINE_UID_LABEL) == Some(uid) => {
                self.known()
                    .insert(key.clone(), (uid.to_string(), one.id().to_string()));
            }
            _ => {
                self.known().remove(key);
            }
        }
        Ok(listed)
    }

    /// Whether a watch event carries one of this reconciler's own writes of the Machine
    /// (finalizer or status) that it has not seen yet. Such an event need not enqueue the key
    /// again: the reconcile that wrote it already decided its requeue. Any other change
    /// (another resourceVersion) is not an own write.
    pub fn is_own_write(&self, obj: &irikit_api::Object) -> bool {
        self.own_writes.take(obj)
    }

    async fn list(&self, request: machine::ListMachinesRequest) -> Result<Vec<machine::Machine>> {
        let mut client = self.client.clone();
        Ok(rpc(
            "ListMachines",
            self.config.rpc_timeout,
            client.list_machines(request),
        )
        .await?
        .machines)
    }

    async fn get_by_id(&self, id: &str) -> Result<Option<machine::Machine>> {
        let request = machine::ListMachinesRequest {
            filter: Some(machine::MachineFilter {
                id: id.to_string(),
                label_selector: HashMap::new(),
            }),
        };
        Ok(self.list(request).await?.into_iter().next())
    }

    /// Deletes an IRI machine; `Ok(true)` if the runtime accepted it, `Ok(false)` if it was
    /// already gone.
    async fn delete(&self, id: &str) -> Result<bool> {
        let mut client = self.client.clone();
        let request = machine::DeleteMachineRequest {
            machine_id: id.to_string(),
        };
        not_found_is_gone(
            rpc(
                "DeleteMachine",
                self.config.rpc_timeout,
                client.delete_machine(request),
            )
            .await,
        )
    }

    async fn runtime_classes(&self) -> Vec<machine::MachineClassStatus> {
        if let Some(classes) = self.view.classes() {
            return classes;
        }
        probe_once::<MachineFlavor>(&self.client, self.config.rpc_timeout, &self.view).await;
        self.view.classes().unwrap_or_default()
    }

    /// Builds the CreateMachine request, or says what is missing.
    async fn prerequisites(&self, m: &Machine) -> Result<Prerequisites> {
        let class_name = &m.spec.machine_class_ref.name;
        let cached = self
            .classes
            .as_ref()
            .filter(|c| c.is_synced())
            .map(|c| c.get(&ObjectRef::new("", class_name.clone())));
        let class = match cached {
            Some(Some(obj)) => MachineClass::from_object(obj).ok_or_else(|| {
                store::Error::Backend(format!("cached {class_name:?} is not a MachineClass"))
            }),
            Some(None) => Err(store::Error::NotFound {
                kind: irikit_api::Kind::MachineClass,
                key: class_name.clone(),
            }),
            None => self.store.get_typed::<MachineClass>("", class_name).await,
        };
        let class = match class {
            Ok(class) => class,
            Err(store::Error::NotFound { .. }) => {
                return Ok(Prerequisites::Waiting(
                    REASON_MACHINE_CLASS_NOT_READY,
                    format!("machine class {class_name:?} not found"),
                ));
            }
            Err(err) => return Err(err.into()),
        };
        let runtime_classes = self.runtime_classes().await;
        if self.view.classes().is_none() {
            return Err(Error::ClassMapping {
                class: class_name.clone(),
                reason: ClassMapError::Unknown,
            });
        }
        let runtime_class = map_class(class_name, &capabilities_of(&class), &runtime_classes)
            .map_err(|reason| Error::ClassMapping {
                class: class_name.clone(),
                reason,
            })?;
        let iri_class = runtime_class
            .machine_class
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_default();

        let mut ignition_data = Vec::new();
        if let Some(selector) = &m.spec.ignition_ref {
            let key = if selector.key.is_empty() {
                DEFAULT_IGNITION_KEY
            } else {
                selector.key.as_str()
            };
            let secret = match self
                .store
                .get_typed::<Secret>(&m.metadata.namespace, &selector.name)
                .await
            {
                Ok(secret) => secret,
                Err(store::Error::NotFound { .. }) => {
                    return Ok(Prerequisites::Waiting(
                        REASON_IGNITION_NOT_READY,
                        format!("ignition secret {:?} not found", selector.name),
                    ));
                }
                Err(err) => return Err(err.into()),
            };
            if let Some(encoded) = secret.data.get(key) {
                match base64::engine::general_purpose::STANDARD.decode(encoded) {
                    Ok(bytes) => ignition_data = bytes,
                    Err(_) => {
                        return Ok(Prerequisites::Waiting(
                            REASON_IGNITION_NOT_READY,
                            format!(
                                "ignition secret {:?} key {key:?} is not base64",
                                selector.name
                            ),
                        ));
                    }
                }
            } else if let Some(text) = secret.string_data.get(key) {
                ignition_data = text.clone().into_bytes();
            } else {
                return Ok(Prerequisites::Waiting(
                    REASON_IGNITION_NOT_READY,
                    format!("ignition secret {:?} has no key {key:?}", selector.name),
                ));
            }
        }

        let mut volumes = Vec::new();
        for desired in self.desired_volumes(m).await? {
            match desired.volume {
                Ok(volume) => volumes.push(volume),
                Err(message) => {
                    return Ok(Prerequisites::Waiting(REASON_VOLUME_NOT_READY, message));
                }
            }
        }
        let nics = nic::desired_nics(m);
        if let Some(message) = nics.unresolved.into_values().next() {
            return Ok(Prerequisites::Waiting(
                REASON_NETWORK_INTERFACE_NOT_READY,
                message,
            ));
        }

        let labels = HashMap::from([
            (keys::MACHINE_UID_LABEL.to_string(), m.metadata.uid.clone()),
            (
                keys::MACHINE_NAMESPACE_LABEL.to_string(),
                m.metadata.namespace.clone(),
            ),
            (
                keys::MACHINE_NAME_LABEL.to_string(),
                m.metadata.name.clone(),
            ),
        ]);
        let mut annotations = HashMap::from([
            (
                keys::MACHINE_GENERATION_ANNOTATION.to_string(),
                m.metadata.generation.to_string(),
            ),
            (
                keys::IRI_MACHINE_GENERATION_ANNOTATION.to_string(),
                "0".to_string(),
            ),
        ]);
        nic::annotate(m, &mut annotations);
        Ok(Prerequisites::Ready(Box::new(machine::Machine {
            metadata: Some(meta::ObjectMetadata {
                labels,
                annotations,
                ..meta::ObjectMetadata::default()
            }),
            spec: Some(machine::MachineSpec {
                power: desired_power(m) as i32,
                class: iri_class,
                ignition_data,
                volumes,
                network_interfaces: nics.resolved,
                guest_config: m
                    .spec
                    .guest_config
                    .as_ref()
                    .filter(|g| !g.hostname.is_empty())
                    .map(|g| machine::GuestConfig {
                        hostname: g.hostname.clone(),
                    }),
            }),
            status: None,
        })))
    }

    async fn finalize(&self, m: Machine) -> Result<Action> {
        let uid = m.metadata.uid.clone();
        let mut listed = self
            .list(label_filter(&[(keys::MACHINE_UID_LABEL, &uid)]))
            .await?;
        // The machine the status names, also when the runtime dropped its labels.
        if let Some(id) = labels::status_id(&m)
            && !listed.iter().any(|iri| iri.id() == id)
            && let Some(iri) = self.get_by_id(id).await?
            && iri
                .label(keys::MACHINE_UID_LABEL)
                .is_none_or(|other| other == uid)
        {
            listed.push(iri);
        }
        let mut still_deleting = false;
        for iri in &listed {
            still_deleting |= self.delete(iri.id()).await?;
        }
        if still_deleting {
            return Ok(Action::requeue(self.config.converging_requeue));
        }
        volumes::delete_ephemeral(self.store.as_ref(), &m).await?;
        let mut updated = m.clone();
        updated
            .metadata
            .finalizers
            .retain(|f| f != keys::MACHINE_FINALIZER);
        match self.write_known(&m, updated, false).await {
            Ok(_) | Err(Error::Store(store::Error::NotFound { .. })) => {}
            Err(err) => return Err(err),
        }
        info!("machine deleted from the runtime; finalizer removed");
        Ok(Action::await_change())
    }

    /// Records a Normal Event on the Machine (one per reason; repeats bump `count`).
    async fn record_event(&self, m: &Machine, reason: &str, message: &str) {
        events::record(
            self.store.as_ref(),
            involved(Kind::Machine, &m.metadata),
            "Normal",
            reason,
            message,
            EVENT_COMPONENT,
        )
        .await;
    }

    async fn create(&self, m: &Machine) -> Result<Action> {
        let request = match self.prerequisites(m).await? {
            Prerequisites::Ready(request) => request,
            Prerequisites::Waiting(reason, message) => {
                info!(%reason, %message, "prerequisites not met; not creating the machine yet");
                self.record_event(m, reason, &message).await;
                return Ok(Action::requeue(self.config.prerequisite_requeue));
            }
        };
        let mut request = *request;
        let reserved = self.reservation_id(m).await;
        if let Some((id, _)) = &reserved
            && let Some(md) = request.metadata.as_mut()
        {
            md.annotations
                .insert(keys::RESERVATION_ID_ANNOTATION.to_string(), id.clone());
        }
        let mut client = self.client.clone();
        let mut res = rpc(
            "CreateMachine",
            self.config.rpc_timeout,
            client.create_machine(machine::CreateMachineRequest {
                machine: Some(request.clone()),
            }),
        )
        .await;
        if reserved.is_some()
            && matches!(&res, Err(err) if err.code() == Some(tonic::Code::FailedPrecondition))
        {
            // The reservation is stale (consumed or released meanwhile): an ordinary create.
            warn!(error = ?res.as_ref().err(), "the runtime refused the reservation; creating without it");
            if let Some(md) = request.metadata.as_mut() {
                md.annotations.remove(keys::RESERVATION_ID_ANNOTATION);
            }
            res = rpc(
                "CreateMachine",
                self.config.rpc_timeout,
                client.create_machine(machine::CreateMachineRequest {
                    machine: Some(request),
                }),
            )
            .await;
        }
        let created = res?
            .machine
            .ok_or_else(|| Error::BadResponse("CreateMachine without a machine".into()))?;
        if let (Some((_, key)), Some((reservations, queue))) = (&reserved, &self.reservations) {
            // The reservation is BOUND now: carry it up at once.
            reservations.refresh(key);
            queue.add(key.clone());
        }
        let id = created.id().to_string();
        if id.is_empty() {
            return Err(Error::BadResponse(
                "CreateMachine without metadata.id".into(),
            ));
        }
        info!(machine_id = %id, "machine created on the runtime");
        self.known().insert(
            ObjectRef::new(m.metadata.namespace.clone(), m.metadata.name.clone()),
            (m.metadata.uid.clone(), id.clone()),
        );
        // The update pass (handshake annotations, the runtime's current state) right away, on
        // the machine as listed now: one status write, where writing the create response and
        // requeueing would write Pending first and then pass again (IronCore does that; the
        // end state is the same, and a rollout pays for it twice).
        match self.get_by_id(&id).await? {
            Some(iri) => self.update(m, iri).await,
            None => {
                self.write_status(m, &created).await?;
                Ok(Action::requeue(self.config.converging_requeue))
            }
        }
    }

    /// The IRI volume each spec volume resolves to (local disks directly; `volumeRef` and
    /// ephemeral volumes through their claimed, Available storage Volume).
    async fn desired_volumes(&self, m: &Machine) -> Result<Vec<DesiredVolume>> {
        let mut out = Vec::new();
        for volume in &m.spec.volumes {
            let resolved = if let Some(local) = local_disk_volume(volume) {
                Ok(local)
            } else if let Some(name) = volumes::referenced_volume(m, volume) {
                volumes::connection_volume(self.store.as_ref(), m, volume, &name).await?
            } else {
                Err(format!("volume {:?} has no source", volume.name))
            };
            out.push(DesiredVolume {
                name: volume.name.clone(),
                volume: resolved,
            });
        }
        Ok(out)
    }

    /// Syncs the IRI machine's volumes with the spec (§3.6 step 2): an equal volume is kept;
    /// the same connection (driver and handle) with another `effective_storage_bytes` is
    /// resized online with UpdateVolume; anything else that changed or left the spec is
    /// detached (NotFound ignored) and desired volumes not present are attached. A volume that
    /// does not resolve right now is neither detached nor attached (no detach on transient
    /// unreadiness, §8.8) and records a `VolumeNotReady` Event. Returns whether anything was
    /// pushed.
    async fn sync_volumes(
        &self,
        m: &Machine,
        id: &str,
        current: &[machine::Volume],
    ) -> Result<bool> {
        let desired = self.desired_volumes(m).await?;
        let mut pushed = false;
        let mut kept = Vec::new();
        for volume in current {
            let want = desired.iter().find(|d| d.name == volume.name);
            match want.map(|d| &d.volume) {
                Some(Err(message)) => {
                    self.record_event(m, REASON_VOLUME_NOT_READY, message).await;
                    kept.push(volume.name.clone());
                    continue;
                }
                Some(Ok(want)) if want == volume => {
                    kept.push(volume.name.clone());
                    continue;
                }
                Some(Ok(want)) if is_resize(volume, want) => {
                    let mut client = self.client.clone();
                    rpc(
                        "UpdateVolume",
                        self.config.rpc_timeout,
                        client.update_volume(machine::UpdateVolumeRequest {
                            machine_id: id.to_string(),
                            volume: Some(want.clone()),
                        }),
                    )
                    .await?;
                    info!(machine_id = %id, volume = %volume.name, "volume resized");
                    kept.push(volume.name.clone());
                    pushed = true;
                    continue;
                }
                _ => {}
            }
            let mut client = self.client.clone();
            let res = rpc(
                "DetachVolume",
                self.config.rpc_timeout,
                client.detach_volume(machine::DetachVolumeRequest {
                    machine_id: id.to_string(),
                    name: volume.name.clone(),
                }),
            )
            .await;
            match res {
                Ok(_) => info!(machine_id = %id, volume = %volume.name, "volume detached"),
                Err(err) if err.code() == Some(tonic::Code::NotFound) => {}
                Err(err) => return Err(err),
            }
            pushed = true;
        }
        for desired in desired {
            if kept.contains(&desired.name) {
                continue;
            }
            let volume = match desired.volume {
                Ok(volume) => volume,
                Err(message) => {
                    self.record_event(m, REASON_VOLUME_NOT_READY, &message)
                        .await;
                    continue;
                }
            };
            let mut client = self.client.clone();
            rpc(
                "AttachVolume",
                self.config.rpc_timeout,
                client.attach_volume(machine::AttachVolumeRequest {
                    machine_id: id.to_string(),
                    volume: Some(volume),
                }),
            )
            .await?;
            info!(machine_id = %id, volume = %desired.name, "volume attached");
            pushed = true;
        }
        Ok(pushed)
    }

    async fn update(&self, m: &Machine, iri: machine::Machine) -> Result<Action> {
        let id = iri.id().to_string();
        let spec = iri.spec.clone().unwrap_or_default();
        let mut pushed = self.sync_nics(m, &id, &spec.network_interfaces).await?;
        pushed |= self.sync_volumes(m, &id, &spec.volumes).await?;
        let power = desired_power(m);
        if spec.power != power as i32 {
            let mut client = self.client.clone();
            rpc(
                "UpdateMachinePower",
                self.config.rpc_timeout,
                client.update_machine_power(machine::UpdateMachinePowerRequest {
                    machine_id: id.clone(),
                    power: power as i32,
                }),
            )
            .await?;
            info!(machine_id = %id, power = power.as_str_name(), "machine power updated");
            pushed = true;
        }
        // §8.5: take the runtime generation *after* this pass's spec calls, so status is not
        // published before the runtime has processed them.
        let iri = if pushed {
            self.get_by_id(&id)
                .await?
                .ok_or_else(|| Error::BadResponse(format!("machine {id} vanished")))?
        } else {
            iri
        };
        let md = metadata(&iri);
        let mut desired = md.annotations.clone();
        desired.insert(
            keys::MACHINE_GENERATION_ANNOTATION.to_string(),
            m.metadata.generation.to_string(),
        );
        desired.insert(
            keys::IRI_MACHINE_GENERATION_ANNOTATION.to_string(),
            md.generation.to_string(),
        );
        nic::annotate(m, &mut desired);
        let iri = if desired == md.annotations {
            iri
        } else {
            let mut client = self.client.clone();
            rpc(
                "UpdateMachineAnnotations",
                self.config.rpc_timeout,
                client.update_machine_annotations(machine::UpdateMachineAnnotationsRequest {
                    machine_id: id.clone(),
                    annotations: desired,
                }),
            )
            .await?;
            self.get_by_id(&id)
                .await?
                .ok_or_else(|| Error::BadResponse(format!("machine {id} vanished")))?
        };
        let settled = self.write_status(m, &iri).await?;
        Ok(Action::requeue(if settled {
            self.config.resync
        } else {
            self.config.converging_requeue
        }))
    }
}

/// One spec volume and the IRI volume it resolves to, or why it does not yet.
struct DesiredVolume {
    name: String,
    volume: std::result::Result<machine::Volume, String>,
}

/// Whether going from `current` to `want` is an online resize (§3.6): both are connections
/// with the same driver and handle and only the effective size differs in kind.
fn is_resize(current: &machine::Volume, want: &machine::Volume) -> bool {
    match (&current.connection, &want.connection) {
        (Some(a), Some(b)) => {
            a.driver == b.driver
                && a.handle == b.handle
                && a.effective_storage_bytes != b.effective_storage_bytes
        }
        _ => false,
    }
}

/// The IRI volume of a localDisk or (deprecated) emptyDisk machine volume.
fn local_disk_volume(volume: &compute::Volume) -> Option<machine::Volume> {
    let local = match (&volume.local_disk, &volume.empty_disk) {
        (Some(local), _) => machine::LocalDisk {
            size_bytes: local.size_limit.map_or(0, |q| clamp_i64(q.value())),
            image: (!local.image.is_empty()).then(|| machine::ImageSpec {
                image: local.image.clone(),
            }),
        },
        // §8.16: the deprecated emptyDisk becomes a local disk instead of never becoming
        // ready.
        (None, Some(empty)) => machine::LocalDisk {
            size_bytes: empty.size_limit.map_or(0, |q| clamp_i64(q.value())),
            image: None,
        },
        (None, None) => return None,
    };
    Some(machine::Volume {
        name: volume.name.clone(),
        device: volume.device.clone().unwrap_or_default(),
        local_disk: Some(local),
        connection: None,
    })
}

fn clamp_i64(value: i128) -> i64 {
    i64::try_from(value.max(0)).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl Reconciler<ObjectRef> for MachineReconciler {
    type Error = Error;

    async fn reconcile(&self, key: &ObjectRef) -> Result<Action> {
        let current = self.get_machine(key).await?;
        let ours = current.filter(|m| {
            m.spec
                .machine_pool_ref
                .as_ref()
                .is_some_and(|r| r.name == self.config.pool_name)
        });

        // Orphan GC for this name, and the IRI machines of the current Machine.
        let uid = ours.as_ref().map(|m| m.metadata.uid.as_str());
        let listed = self.list_for(key, uid).await?;
        let iri = reduce(listed, keys::MACHINE_UID_LABEL, uid, |id| async move {
            self.delete(&id).await
        })
        .await?;
        let Some(m) = ours else {
            return Ok(Action::await_change());
        };

        if m.metadata.is_deleting() {
            if has_finalizer(&m.metadata, keys::MACHINE_FINALIZER) {
                return self.finalize(m).await;
            }
            return Ok(Action::await_change());
        }
        let m = if has_finalizer(&m.metadata, keys::MACHINE_FINALIZER) {
            m
        } else {
            let mut with = m.clone();
            with.metadata
                .finalizers
                .push(keys::MACHINE_FINALIZER.to_string());
            self.write_known(&m, with, false).await?
        };

        for problem in volumes::claim(self.store.as_ref(), &m).await? {
            self.record_event(&m, REASON_VOLUME_NOT_READY, &problem)
                .await;
        }

        let Some(iri) = iri else {
            if let Some(lost) = self.created_unlabelled(&m).await? {
                return self.labels_lost(&m, lost).await;
            }
            return self.create(&m).await;
        };
        if iri.is_deleting() {
            // Being deleted on the runtime side (e.g. by hand); wait until it is gone, then
            // create a new one.
            return Ok(Action::requeue(self.config.converging_requeue));
        }
        self.update(&m, iri).await
    }
}

/// Lists every runtime machine every `period` and calls `on_key` with the Machine key and the id
/// of each IRI machine that appeared, changed or disappeared (IronCore's `irievent` generator). This
/// drives status propagation and finds orphans.
pub async fn runtime_relist(
    client: MachineRuntimeClient<Channel>,
    period: Duration,
    timeout: Duration,
    on_key: impl Fn(ObjectRef, &str) + Send,
    token: CancellationToken,
) {
    let list = move || {
        let mut client = client.clone();
        async move {
            let request = machine::ListMachinesRequest { filter: None };
            Ok(rpc("ListMachines", timeout, client.list_machines(request))
                .await?
                .machines)
        }
    };
    runtime::relist(list, MACHINE_NAME_LABELS, period, on_key, token).await;
}
