//! The broker's operations on the lower plane's Store: every IRI call reads or writes lower
//! objects in the broker's namespace (see [`crate::convert`] for the mapping).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use iri_spec::{
    event::v1alpha1 as event, irikit::reservation::v1alpha1 as rsv, machine::v1alpha1 as machine,
};
use irikit_api::{
    Kind, ListOptions, Object, Quantity, Resource as _, Store, StoreExt as _,
    compute::{self, Machine, MachineClass, MachinePool},
    core::{Event, Secret},
    meta::{LocalObjectReference, ObjectMeta, SecretKeySelector, selector_matches},
    quantity::Format,
    reservation::{self as api_rsv, Reservation, ReservationState},
    storage,
};
use tracing::info;

use crate::{
    convert::{self, Dependents},
    error::{Error, Result, invalid},
};

/// How the broker runs.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The lower namespace of every object the broker creates.
    pub namespace: String,
    /// Equality selector on lower MachinePool labels: the pools the broker aggregates and
    /// places its Machines on (empty: every pool).
    pub pool_selector: BTreeMap<String, String>,
    /// `runtime_name` of Version (IronCore: `machinebroker`).
    pub runtime_name: String,
    /// How long CreateReservation waits for the lower pools to decide before it answers
    /// PENDING (the state travels up later through ListReservations).
    pub reservation_decision_timeout: Duration,
    /// Whether a CreateMachine that names no reservation reserves one machine in the lower
    /// plane first (when some selected lower pool serves reservations): REJECTED everywhere
    /// answers `ResourceExhausted` (the machine must not take held capacity), ACCEPTED places
    /// it where it was accepted. Without it, such a machine is queued in the lower plane.
    pub reserve_unreserved: bool,
    /// How many lower pools a reservation asks at once (0: every selected pool at once). The
    /// pools are asked most free first (their allocatable machines of the reservation's
    /// classes, less what the broker is asking them right now); when every asked pool
    /// rejected, the next ones are asked. The first pool that accepts is the only one that
    /// keeps its hold: the others are dropped from `spec.pools` and release theirs at once.
    pub reservation_fanout: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            namespace: "default".to_owned(),
            pool_selector: BTreeMap::new(),
            runtime_name: "machinebroker".to_owned(),
            reservation_decision_timeout: Duration::from_secs(5),
            reserve_unreserved: true,
            reservation_fanout: 1,
        }
    }
}

/// The machine broker over a lower Store.
#[derive(Clone)]
pub struct Broker {
    store: Arc<dyn Store>,
    config: Arc<BrokerConfig>,
    /// Lower pool → reservations the broker is asking it right now (spreads the asks).
    asking: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    /// Lower pool → when it last rejected a reservation (asked after the others for a while).
    rejected_at: Arc<std::sync::Mutex<HashMap<String, std::time::Instant>>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

const CONFLICT_RETRIES: usize = 16;

fn managed(md: &ObjectMeta) -> bool {
    md.labels.get(convert::MANAGED_LABEL).map(String::as_str) == Some("true")
}

fn is_not_found(err: &irikit_api::store::Error) -> bool {
    matches!(err, irikit_api::store::Error::NotFound { .. })
}

fn is_conflict(err: &irikit_api::store::Error) -> bool {
    matches!(err, irikit_api::store::Error::Conflict { .. })
}

fn required(id: &str, what: &str) -> Result<()> {
    if id.is_empty() {
        return Err(invalid(format!("{what} is required")));
    }
    Ok(())
}

impl Broker {
    /// A broker over `store`.
    pub fn new(store: Arc<dyn Store>, config: BrokerConfig) -> Self {
        Broker {
            store,
            config: Arc::new(config),
            asking: Arc::default(),
            rejected_at: Arc::default(),
        }
    }

    /// The lower store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    fn ns(&self) -> &str {
        &self.config.namespace
    }

    fn managed_list(&self) -> ListOptions {
        ListOptions::default()
            .in_namespace(self.ns())
            .label(convert::MANAGED_LABEL, "true")
    }

    /// The lower Machine `id`, which the broker must manage.
    /// The managed lower objects of kind `R` that an IRI List with filter id `id` names: all
    /// of them (empty `id`), else the one `get` finds (none when `id` is unknown or malformed).
    async fn list_or_get<R, Fut>(&self, id: &str, get: impl FnOnce() -> Fut) -> Result<Vec<R>>
    where
        R: irikit_api::Resource,
        Fut: std::future::Future<Output = Result<R>>,
    {
        if id.is_empty() {
            return Ok(self.store.list_typed::<R>(&self.managed_list()).await?.0);
        }
        match get().await {
            Ok(obj) => Ok(vec![obj]),
            Err(Error::NotFound(_) | Error::InvalidArgument(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn machine(&self, id: &str) -> Result<Machine> {
        required(id, "machine_id")?;
        match self.store.get_typed::<Machine>(self.ns(), id).await {
            Ok(m) if managed(&m.metadata) => Ok(m),
            Ok(_) => Err(invalid(format!("machine {id:?} isn't managed"))),
            Err(e) if is_not_found(&e) => Err(Error::NotFound(format!("machine {id:?} not found"))),
            Err(e) => Err(e.into()),
        }
    }

    /// Changes lower Machine `id` with `f` (spec and metadata), retrying on conflicts.
    async fn modify_machine(
        &self,
        id: &str,
        mut f: impl FnMut(&mut Machine) -> Result<()>,
    ) -> Result<Machine> {
        let mut last = None;
        for _ in 0..CONFLICT_RETRIES {
            let mut m = self.machine(id).await?;
            f(&mut m)?;
            match self.store.update_typed(m).await {
                Ok(m) => return Ok(m),
                Err(e) if is_conflict(&e) => last = Some(e),
                Err(e) if is_not_found(&e) => {
                    return Err(Error::NotFound(format!("machine {id:?} not found")));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| invalid("conflict"), Error::from))
    }

    /// The lower MachineClasses by name.
    async fn classes(&self) -> Result<BTreeMap<String, MachineClass>> {
        let (classes, _) = self
            .store
            .list_typed::<MachineClass>(&ListOptions::all())
            .await?;
        Ok(classes
            .into_iter()
            .map(|c| (c.metadata.name.clone(), c))
            .collect())
    }

    /// The lower MachinePools the selector matches.
    async fn pools(&self) -> Result<Vec<MachinePool>> {
        let (pools, _) = self
            .store
            .list_typed::<MachinePool>(&ListOptions::all())
            .await?;
        Ok(pools
            .into_iter()
            .filter(|p| selector_matches(&self.config.pool_selector, &p.metadata.labels))
            .collect())
    }

    async fn dependents(&self, machine: Option<&str>) -> Result<Dependents> {
        let mut options = self.managed_list();
        if let Some(name) = machine {
            options = options.label(convert::MACHINE_LABEL, name);
        }
        let (volumes, _) = self.store.list_typed::<storage::Volume>(&options).await?;
        let (secrets, _) = self.store.list_typed::<Secret>(&options).await?;
        Ok(Dependents {
            volumes: volumes
                .into_iter()
                .map(|v| (v.metadata.name.clone(), v))
                .collect(),
            secrets: secrets
                .into_iter()
                .map(|s| (s.metadata.name.clone(), s))
                .collect(),
        })
    }

    // --- MachineRuntime

    /// `Version`.
    pub fn version(&self) -> machine::VersionResponse {
        machine::VersionResponse {
            runtime_name: self.config.runtime_name.clone(),
            runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// `Status`: every class some selected lower pool offers, with the summed capacity.
    pub async fn status(&self) -> Result<machine::StatusResponse> {
        let classes = self.classes().await?;
        let mut quantity: BTreeMap<String, i64> = BTreeMap::new();
        for pool in self.pools().await? {
            for (key, q) in &pool.status.capacity {
                if let Some(class) = key.strip_prefix(compute::CLASS_RESOURCE_PREFIX) {
                    let n = i64::try_from(q.value().max(0)).unwrap_or(i64::MAX);
                    let e = quantity.entry(class.to_owned()).or_default();
                    *e = e.saturating_add(n);
                }
            }
            for class in &pool.status.available_machine_classes {
                quantity.entry(class.name.clone()).or_default();
            }
        }
        let machine_class_status = quantity
            .into_iter()
            .filter_map(|(name, quantity)| {
                let class = classes.get(&name)?;
                let resources = class
                    .capabilities
                    .iter()
                    .map(|(k, q)| (k.clone(), i64::try_from(q.value()).unwrap_or(i64::MAX)))
                    .collect();
                Some(machine::MachineClassStatus {
                    machine_class: Some(machine::MachineClass {
                        name,
                        capabilities: Some(machine::MachineClassCapabilities { resources }),
                    }),
                    quantity,
                })
            })
            .collect();
        Ok(machine::StatusResponse {
            machine_class_status,
        })
    }

    /// `ListMachines`.
    pub async fn list_machines(
        &self,
        filter: Option<machine::MachineFilter>,
    ) -> Result<Vec<machine::Machine>> {
        let filter = filter.unwrap_or_default();
        let machines = self
            .list_or_get(&filter.id, || self.machine(&filter.id))
            .await?;
        let deps = if filter.id.is_empty() {
            self.dependents(None).await?
        } else {
            self.dependents(Some(&filter.id)).await?
        };
        Ok(machines
            .iter()
            .map(|m| convert::iri_machine(m, &deps))
            .filter(|m| {
                let labels = m.metadata.as_ref().map(|md| &md.labels);
                filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            })
            .collect())
    }

    /// `CreateMachine`: a lower Machine (plus its ignition Secret and connection Volumes).
    pub async fn create_machine(&self, m: Option<machine::Machine>) -> Result<machine::Machine> {
        let m = m.ok_or_else(|| invalid("machine is required"))?;
        let spec = m
            .spec
            .as_ref()
            .ok_or_else(|| invalid("machine.spec is required"))?;
        if spec.class.is_empty() {
            return Err(invalid("machine.spec.class is required"));
        }
        let power = convert::power_of(spec.power)?;
        let mut names = HashSet::new();
        for vol in &spec.volumes {
            convert::validate_volume(vol)?;
            if !names.insert(vol.name.as_str()) {
                return Err(invalid(format!("duplicate volume name {:?}", vol.name)));
            }
        }
        let mut names = HashSet::new();
        for nic in &spec.network_interfaces {
            convert::validate_nic(nic)?;
            if !names.insert(nic.name.as_str()) {
                return Err(invalid(format!(
                    "duplicate network interface name {:?}",
                    nic.name
                )));
            }
        }
        if !self.classes().await?.contains_key(&spec.class) {
            return Err(invalid(format!("unknown machine class {:?}", spec.class)));
        }
        let md = m.metadata.clone().unwrap_or_default();
        let name = convert::new_id();
        let named = md
            .annotations
            .get(iri_spec::keys::RESERVATION_ID_ANNOTATION)
            .cloned();
        // The lower Reservation the Machine is placed against, and the pool it goes to.
        let (reservation, pool) = match &named {
            Some(id) => match self.reservation(id).await {
                Ok(r) => {
                    self.check_consumable(&r).await?;
                    let pool = self.pick_pool(&r).await?;
                    (Some(id.clone()), pool)
                }
                Err(Error::NotFound(_) | Error::InvalidArgument(_)) => {
                    return Err(Error::FailedPrecondition(format!(
                        "reservation {id:?} not found"
                    )));
                }
                Err(e) => return Err(e),
            },
            None if self.config.reserve_unreserved => match self.reserve_for(&name, spec).await? {
                Some(r) => {
                    let pool = self.pick_pool(&r).await?;
                    (Some(r.metadata.name), pool)
                }
                None => (None, None),
            },
            None => (None, None),
        };
        let ns = self.ns().to_owned();
        let mut lower = Machine {
            metadata: convert::lower_meta(&ns, &name, &md),
            ..Machine::default()
        };
        if let Some(id) = &reservation {
            lower
                .metadata
                .annotations
                .insert(api_rsv::RESERVATION_NAME_ANNOTATION.to_owned(), id.clone());
        }
        lower.spec = compute::MachineSpec {
            machine_class_ref: LocalObjectReference::new(&spec.class),
            machine_pool_selector: self.config.pool_selector.clone(),
            machine_pool_ref: pool.map(LocalObjectReference::new),
            power,
            network_interfaces: spec
                .network_interfaces
                .iter()
                .map(convert::machine_nic)
                .collect(),
            volumes: spec
                .volumes
                .iter()
                .map(|v| convert::machine_volume(&name, v))
                .collect(),
            guest_config: spec
                .guest_config
                .as_ref()
                .filter(|g| !g.hostname.is_empty())
                .map(|g| compute::GuestConfig {
                    hostname: g.hostname.clone(),
                }),
            ..compute::MachineSpec::default()
        };
        convert::assign_devices(&mut lower.spec.volumes);
        for v in &spec.volumes {
            convert::set_device(&mut lower.metadata, &v.name, Some(&v.device));
        }
        if !spec.ignition_data.is_empty() {
            let secret_name = convert::ignition_secret_name(&name);
            lower.spec.ignition_ref = Some(SecretKeySelector {
                name: secret_name.clone(),
                key: convert::IGNITION_KEY.to_owned(),
            });
            let data =
                HashMap::from([(convert::IGNITION_KEY.to_owned(), spec.ignition_data.clone())]);
            self.store
                .create(
                    convert::secret(convert::dependent_meta(&ns, &name, &secret_name), &data)
                        .into_object(),
                )
                .await?;
        }
        let created = match self.store.create_typed(lower).await {
            Ok(created) => created,
            Err(e) => {
                self.delete_dependents(&name, None).await.ok();
                return Err(e.into());
            }
        };
        for vol in &spec.volumes {
            if let Some(conn) = &vol.connection
                && let Err(e) = self.create_connection_volume(&created, vol, conn).await
            {
                self.store
                    .delete(Kind::Machine, &ns, &name, None)
                    .await
                    .ok();
                self.delete_dependents(&name, None).await.ok();
                return Err(e);
            }
        }
        info!(machine.id = %name, class = %spec.class, "machine created");
        let deps = self.dependents(Some(&name)).await?;
        Ok(convert::iri_machine(&created, &deps))
    }

    async fn create_connection_volume(
        &self,
        owner: &Machine,
        vol: &machine::Volume,
        conn: &machine::VolumeConnection,
    ) -> Result<()> {
        let ns = self.ns();
        let name = &owner.metadata.name;
        let object = convert::connection_volume(ns, name, &owner.metadata.uid, vol, conn);
        let object_name = object.metadata.name.clone();
        for (secret_name, data) in [
            (convert::access_secret_name(&object_name), &conn.secret_data),
            (
                convert::encryption_secret_name(&object_name),
                &conn.encryption_data,
            ),
        ] {
            if data.is_empty() {
                continue;
            }
            let secret = convert::secret(convert::dependent_meta(ns, name, &secret_name), data);
            match self.store.create(secret.clone().into_object()).await {
                Ok(_) => {}
                Err(irikit_api::store::Error::AlreadyExists { .. }) => {
                    let current = self.store.get(Kind::Secret, ns, &secret_name).await?;
                    let mut next = secret.into_object();
                    next.metadata_mut()
                        .resource_version
                        .clone_from(&current.metadata().resource_version);
                    self.store.update(next).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let status = object.status.clone();
        let mut last = None;
        for _ in 0..CONFLICT_RETRIES {
            let written = match self.store.create_typed(object.clone()).await {
                Ok(created) => Ok(created),
                Err(irikit_api::store::Error::AlreadyExists { .. }) => {
                    let mut current: storage::Volume =
                        self.store.get_typed(ns, &object_name).await?;
                    current.spec.clone_from(&object.spec);
                    self.store.update_typed(current).await
                }
                Err(e) => Err(e),
            };
            let mut with_status = match written {
                Ok(v) => v,
                Err(e) if is_conflict(&e) => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            with_status.status.clone_from(&status);
            match self.store.update_status(with_status.into_object()).await {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| invalid("conflict"), Error::from))
    }

    /// Deletes the Volumes and Secrets of lower Machine `name` (only those of volume object
    /// `only`, when given).
    async fn delete_dependents(&self, name: &str, only: Option<&str>) -> Result<()> {
        let deps = self.dependents(Some(name)).await?;
        let ns = self.ns();
        let wanted = |object: &str| {
            only.is_none_or(|o| {
                object == o
                    || object == convert::access_secret_name(o)
                    || object == convert::encryption_secret_name(o)
            })
        };
        for v in deps.volumes.keys().filter(|v| wanted(v)) {
            match self.store.delete(Kind::Volume, ns, v, None).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if only.is_none() {
            let (reservations, _) = self
                .store
                .list_typed::<Reservation>(&self.managed_list().label(convert::MACHINE_LABEL, name))
                .await?;
            for r in reservations {
                self.delete_lower_reservation(&r.metadata.name).await?;
            }
        }
        for s in deps.secrets.keys().filter(|s| wanted(s)) {
            match self.store.delete(Kind::Secret, ns, s, None).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// `DeleteMachine`: deletes the lower Machine (its poollet's finalizer keeps it listed,
    /// TERMINATING, until the leaf runtime let it go) and its Volumes and Secrets.
    pub async fn delete_machine(&self, id: &str) -> Result<()> {
        let m = self.machine(id).await?;
        match self.store.delete(Kind::Machine, self.ns(), id, None).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                return Err(Error::NotFound(format!("machine {id:?} not found")));
            }
            Err(e) => return Err(e.into()),
        }
        if !m.metadata.is_deleting() {
            info!(machine.id = %id, "machine deleted");
        }
        self.delete_dependents(id, None).await
    }

    /// `UpdateMachineAnnotations`: replaces the IRI annotations.
    pub async fn update_annotations(
        &self,
        id: &str,
        annotations: &HashMap<String, String>,
    ) -> Result<()> {
        let json = convert::to_json(annotations);
        self.modify_machine(id, |m| {
            m.metadata
                .annotations
                .insert(convert::ANNOTATIONS_ANNOTATION.to_owned(), json.clone());
            Ok(())
        })
        .await
        .map(drop)
    }

    /// `UpdateMachinePower`.
    pub async fn update_power(&self, id: &str, power: i32) -> Result<()> {
        required(id, "machine_id")?;
        let power = convert::power_of(power)?;
        self.modify_machine(id, |m| {
            m.spec.power = power;
            Ok(())
        })
        .await
        .map(drop)
    }

    /// `AttachVolume`.
    pub async fn attach_volume(&self, id: &str, vol: Option<machine::Volume>) -> Result<()> {
        required(id, "machine_id")?;
        let vol = vol.ok_or_else(|| invalid("volume is required"))?;
        convert::validate_volume(&vol)?;
        let m = self.machine(id).await?;
        if m.spec.volumes.iter().any(|v| v.name == vol.name) {
            return Err(Error::AlreadyExists(format!(
                "volume {:?} is already attached",
                vol.name
            )));
        }
        if let Some(conn) = &vol.connection {
            self.create_connection_volume(&m, &vol, conn).await?;
        }
        let entry = convert::machine_volume(id, &vol);
        let res = self
            .modify_machine(id, |m| {
                if m.spec.volumes.iter().any(|v| v.name == vol.name) {
                    return Err(Error::AlreadyExists(format!(
                        "volume {:?} is already attached",
                        vol.name
                    )));
                }
                m.spec.volumes.push(entry.clone());
                convert::assign_devices(&mut m.spec.volumes);
                convert::set_device(&mut m.metadata, &vol.name, Some(&vol.device));
                Ok(())
            })
            .await;
        if res.is_err() && vol.connection.is_some() {
            // Only when no other attach of that name won the race (that one's object stays).
            if !matches!(res, Err(Error::AlreadyExists(_))) {
                let object = convert::volume_object_name(id, &vol.name);
                self.delete_dependents(id, Some(&object)).await.ok();
            }
        }
        res.map(drop)
    }

    /// `DetachVolume`.
    pub async fn detach_volume(&self, id: &str, name: &str) -> Result<()> {
        required(id, "machine_id")?;
        required(name, "name")?;
        let mut removed = None;
        self.modify_machine(id, |m| {
            let pos = m
                .spec
                .volumes
                .iter()
                .position(|v| v.name == name)
                .ok_or_else(|| Error::NotFound(format!("volume {name:?} not found")))?;
            removed = Some(m.spec.volumes.remove(pos));
            convert::set_device(&mut m.metadata, name, None);
            Ok(())
        })
        .await?;
        if let Some(object) = removed.and_then(|v| v.volume_ref) {
            self.delete_dependents(id, Some(&object.name)).await?;
        }
        Ok(())
    }

    /// `UpdateVolume`: a local disk's size and image, or a connection's access.
    pub async fn update_volume(&self, id: &str, vol: Option<machine::Volume>) -> Result<()> {
        required(id, "machine_id")?;
        let vol = vol.ok_or_else(|| invalid("volume is required"))?;
        convert::validate_volume(&vol)?;
        let m = self.machine(id).await?;
        let Some(current) = m.spec.volumes.iter().find(|v| v.name == vol.name) else {
            return Err(Error::NotFound(format!("volume {:?} not found", vol.name)));
        };
        match (&vol.connection, current.volume_ref.is_some()) {
            (Some(conn), true) => {
                self.create_connection_volume(&m, &vol, conn).await?;
                // The device may change too.
                let entry = convert::machine_volume(id, &vol);
                self.modify_machine(id, |m| {
                    if let Some(v) = m.spec.volumes.iter_mut().find(|v| v.name == vol.name) {
                        v.device.clone_from(&entry.device);
                    }
                    convert::assign_devices(&mut m.spec.volumes);
                    convert::set_device(&mut m.metadata, &vol.name, Some(&vol.device));
                    Ok(())
                })
                .await
                .map(drop)
            }
            (None, false) => {
                let entry = convert::machine_volume(id, &vol);
                self.modify_machine(id, |m| {
                    let v = m
                        .spec
                        .volumes
                        .iter_mut()
                        .find(|v| v.name == vol.name)
                        .ok_or_else(|| {
                            Error::NotFound(format!("volume {:?} not found", vol.name))
                        })?;
                    *v = entry.clone();
                    convert::assign_devices(&mut m.spec.volumes);
                    convert::set_device(&mut m.metadata, &vol.name, Some(&vol.device));
                    Ok(())
                })
                .await
                .map(drop)
            }
            _ => Err(invalid(format!(
                "volume {:?}: an update cannot change the source between local disk and connection",
                vol.name
            ))),
        }
    }

    /// `AttachNetworkInterface`.
    pub async fn attach_nic(&self, id: &str, nic: Option<machine::NetworkInterface>) -> Result<()> {
        required(id, "machine_id")?;
        let nic = nic.ok_or_else(|| invalid("network_interface is required"))?;
        convert::validate_nic(&nic)?;
        let entry = convert::machine_nic(&nic);
        self.modify_machine(id, |m| {
            if m.spec.network_interfaces.iter().any(|n| n.name == nic.name) {
                return Err(Error::AlreadyExists(format!(
                    "network interface {:?} is already attached",
                    nic.name
                )));
            }
            m.spec.network_interfaces.push(entry.clone());
            Ok(())
        })
        .await
        .map(drop)
    }

    /// `DetachNetworkInterface`.
    pub async fn detach_nic(&self, id: &str, name: &str) -> Result<()> {
        required(id, "machine_id")?;
        required(name, "name")?;
        self.modify_machine(id, |m| {
            let pos = m
                .spec
                .network_interfaces
                .iter()
                .position(|n| n.name == name)
                .ok_or_else(|| Error::NotFound(format!("network interface {name:?} not found")))?;
            m.spec.network_interfaces.remove(pos);
            Ok(())
        })
        .await
        .map(drop)
    }

    /// `Exec`: the broker has no console bridge (an empty URL, "unsupported").
    pub async fn exec(&self, id: &str) -> Result<String> {
        self.machine(id).await?;
        Ok(String::new())
    }

    /// `ListEvents`: the lower Events of the broker's Machines, with the IRI machine's
    /// metadata as the involved object (from/to honoured when both are set, like the
    /// providers' recorder).
    pub async fn list_events(
        &self,
        filter: Option<machine::EventFilter>,
    ) -> Result<Vec<event::Event>> {
        let filter = filter.unwrap_or_default();
        let (machines, _) = self
            .store
            .list_typed::<Machine>(&self.managed_list())
            .await?;
        let metas: HashMap<String, _> = machines
            .iter()
            .map(|m| (m.metadata.name.clone(), convert::iri_metadata(&m.metadata)))
            .collect();
        let (events, _) = self
            .store
            .list_typed::<Event>(&ListOptions::default().in_namespace(self.ns()))
            .await?;
        let window = filter.events_from_time > 0 && filter.events_to_time > 0;
        let mut out = Vec::new();
        for e in events {
            if e.involved_object.kind != "Machine" {
                continue;
            }
            let Some(md) = metas.get(&e.involved_object.name) else {
                continue;
            };
            if !filter.id.is_empty() && md.id != filter.id {
                continue;
            }
            if !filter
                .label_selector
                .iter()
                .all(|(k, v)| md.labels.get(k) == Some(v))
            {
                continue;
            }
            let time = e
                .last_timestamp
                .as_deref()
                .or(e.first_timestamp.as_deref())
                .or(e.metadata.creation_timestamp.as_deref());
            let event_time = convert::rfc3339_nanos(time) / 1_000_000_000;
            if window
                && (event_time < filter.events_from_time || event_time > filter.events_to_time)
            {
                continue;
            }
            out.push(event::Event {
                spec: Some(event::EventSpec {
                    involved_object_meta: Some(md.clone()),
                    reason: e.reason.clone(),
                    message: e.message.clone(),
                    r#type: e.type_.clone(),
                    event_time,
                    action: if e.action.is_empty() {
                        e.reason.clone()
                    } else {
                        e.action.clone()
                    },
                }),
            });
        }
        Ok(out)
    }
}

mod reservation;

/// Every lower object kind the broker writes (for clean-up in tests and tools).
pub const LOWER_KINDS: [Kind; 4] = [Kind::Machine, Kind::Volume, Kind::Secret, Kind::Reservation];

/// Whether `obj` is one the broker manages.
pub fn is_managed(obj: &Object) -> bool {
    managed(obj.metadata())
}
