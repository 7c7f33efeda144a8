//! The lifecycle environment of one run: the embedded [`ControlPlane`] on the configured
//! store, MachineClass objects matching the runtime's classes, and a machinepoollet that
//! reaches the runtime under test through a [`Gate`]. Every object lives in a namespace named
//! after the run id and a pool named after it, so runs sharing an etcd do not meet.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context as _;
use iri_spec::{keys, machine::v1alpha1 as machine, volume::v1alpha1 as volume};
use irikit_api::{
    Kind, ListOptions, Object, Resource as _, Store,
    compute::MachineClass,
    meta::ObjectMeta,
    quantity::{Format, Quantity},
    storage::VolumeClass,
};

use crate::{
    case::verdict::Service,
    ctx::clients::Clients,
    lifecycle::{
        ControlPlane, PlaneConfig,
        gate::{Gate, Upstream},
    },
    report::CleanupReport,
};

/// How the lifecycle level runs.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// The store: `memory` or `etcd://host:port[,host:port]`.
    pub store: String,
    /// Control-plane timings.
    pub plane: PlaneConfig,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            store: "memory".to_owned(),
            plane: PlaneConfig::default(),
        }
    }
}

/// A machine class as the runtime's Status reports it.
#[derive(Debug, Clone)]
pub struct RuntimeClass {
    /// IRI class name (also the name of the MachineClass object the suite uses).
    pub name: String,
    /// `resources` of its capabilities (`cpu` cores, `memory` bytes, ...).
    pub resources: BTreeMap<String, i64>,
    /// `quantity`.
    pub quantity: i64,
}

/// The machine side of the environment.
#[derive(Debug)]
pub struct MachineSide {
    /// The MachinePool the poollet announces.
    pub pool: String,
    /// The poollet's connection to the runtime.
    pub gate: Gate,
    /// The runtime's `runtime_name` (prefix of `status.machineID`).
    pub runtime_name: String,
    /// The runtime's machine classes.
    pub classes: Vec<RuntimeClass>,
    /// The class the cases' Machines use (`--class`, else the first the runtime reports).
    pub class: String,
}

/// The volume side of the environment.
#[derive(Debug)]
pub struct VolumeSide {
    /// The VolumePool the volumepoollet announces.
    pub pool: String,
    /// The volumepoollet's connection to the runtime.
    pub gate: Gate,
    /// The runtime's `runtime_name` (prefix of `status.volumeID`).
    pub runtime_name: String,
    /// The runtime's volume classes: name, `(tps, iops)`, quantity in bytes.
    pub classes: Vec<(String, (i64, i64), i64)>,
    /// The class the cases' Volumes use (`--volume-class`, else the first reported).
    pub class: String,
}

/// The environment of one lifecycle run.
#[derive(Debug)]
pub struct Env {
    plane: ControlPlane,
    namespace: String,
    machine: Result<MachineSide, String>,
    volume: Result<VolumeSide, String>,
    created_classes: Vec<(Kind, String)>,
}

/// A namespace / object-name part made of `s`: lowercase alphanumerics and `-`, ≤ 40 chars.
pub fn dns_part(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    while out.ends_with('-') {
        out.pop();
    }
    while out.starts_with('-') {
        out.remove(0);
    }
    if out.is_empty() {
        "run".to_owned()
    } else {
        out
    }
}

async fn rpc<T>(
    d: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(d, fut).await {
        Ok(Ok(res)) => Ok(res.into_inner()),
        Ok(Err(st)) => anyhow::bail!("{:?}: {}", st.code(), st.message()),
        Err(_) => anyhow::bail!("no answer within {d:?}"),
    }
}

fn class_object(class: &RuntimeClass) -> MachineClass {
    let capabilities = class
        .resources
        .iter()
        .map(|(k, v)| {
            let format = if k == "memory" {
                Format::BinarySI
            } else {
                Format::DecimalSI
            };
            (k.clone(), Quantity::from_int(*v, format))
        })
        .collect();
    MachineClass {
        metadata: ObjectMeta::named(&class.name),
        capabilities,
        ..MachineClass::default()
    }
}

impl Env {
    /// Opens the store, starts the control plane and, when the runtime has a machine
    /// endpoint, the machinepoollet. A side that cannot start (the runtime does not answer
    /// Version or Status, no class) is recorded; its cases fail with the reason.
    pub async fn start(
        config: &LifecycleConfig,
        clients: &Clients,
        upstreams: &BTreeMap<Service, Upstream>,
        classes: (Option<&str>, Option<&str>),
        run_id: &str,
        rpc_timeout: Duration,
    ) -> anyhow::Result<Env> {
        let (machine_class, volume_class) = classes;
        let store = irikit_api::store::open(&config.store)
            .await
            .with_context(|| format!("opening the store {}", config.store))?;
        let plane = ControlPlane::start(store, config.plane.clone());
        let namespace = dns_part(run_id);
        let mut env = Env {
            plane,
            machine: Err("no machine runtime endpoint".to_owned()),
            volume: Err("no volume runtime endpoint".to_owned()),
            namespace,
            created_classes: Vec::new(),
        };
        if let (Some(client), Some(upstream)) = (&clients.machine, upstreams.get(&Service::Machine))
        {
            let side = env
                .start_machine_side(client.clone(), upstream.clone(), machine_class, rpc_timeout)
                .await;
            env.machine = side.map_err(|e| format!("{e:#}"));
        }
        if let (Some(client), Some(upstream)) = (&clients.volume, upstreams.get(&Service::Volume)) {
            let side = env
                .start_volume_side(client.clone(), upstream.clone(), volume_class, rpc_timeout)
                .await;
            env.volume = side.map_err(|e| format!("{e:#}"));
        }
        Ok(env)
    }

    async fn start_volume_side(
        &mut self,
        mut client: volume::volume_runtime_client::VolumeRuntimeClient<crate::breaker::Guarded>,
        upstream: Upstream,
        volume_class: Option<&str>,
        d: Duration,
    ) -> anyhow::Result<VolumeSide> {
        let version = rpc(d, client.version(volume::VersionRequest::default()))
            .await
            .context("volume runtime Version")?;
        let status = rpc(d, client.status(volume::StatusRequest::default()))
            .await
            .context("volume runtime Status")?;
        let classes: Vec<(String, (i64, i64), i64)> = status
            .volume_class_status
            .into_iter()
            .filter_map(|s| {
                let class = s.volume_class?;
                let caps = class.capabilities.map_or((0, 0), |c| (c.tps, c.iops));
                Some((class.name, caps, s.quantity))
            })
            .filter(|(name, _, _)| !name.is_empty())
            .collect();
        anyhow::ensure!(
            !classes.is_empty(),
            "the volume runtime's Status reports no volume class"
        );
        let class = volume_class.map_or_else(|| classes[0].0.clone(), str::to_owned);
        for (name, (tps, iops), _) in &classes {
            let wanted = VolumeClass {
                metadata: ObjectMeta::named(name),
                capabilities: [
                    (
                        "tps".to_owned(),
                        Quantity::from_int(*tps, Format::DecimalSI),
                    ),
                    (
                        "iops".to_owned(),
                        Quantity::from_int(*iops, Format::DecimalSI),
                    ),
                ]
                .into(),
                ..VolumeClass::default()
            };
            self.ensure_class(wanted.into_object()).await?;
        }
        let pool = format!("{}-volumes", self.namespace);
        let gate = Gate::new(upstream);
        self.plane.add_volume_poollet(
            &pool,
            &format!("iri-conformance://{}", self.namespace),
            gate.channel(),
        );
        Ok(VolumeSide {
            pool,
            gate,
            runtime_name: version.runtime_name,
            classes,
            class,
        })
    }

    async fn start_machine_side(
        &mut self,
        mut client: machine::machine_runtime_client::MachineRuntimeClient<crate::breaker::Guarded>,
        upstream: Upstream,
        machine_class: Option<&str>,
        d: Duration,
    ) -> anyhow::Result<MachineSide> {
        let version = rpc(d, client.version(machine::VersionRequest::default()))
            .await
            .context("machine runtime Version")?;
        let status = rpc(d, client.status(machine::StatusRequest::default()))
            .await
            .context("machine runtime Status")?;
        let classes: Vec<RuntimeClass> = status
            .machine_class_status
            .into_iter()
            .filter_map(|s| {
                let class = s.machine_class?;
                Some(RuntimeClass {
                    name: class.name,
                    resources: class
                        .capabilities
                        .map(|c| c.resources.into_iter().collect())
                        .unwrap_or_default(),
                    quantity: s.quantity,
                })
            })
            .filter(|c| !c.name.is_empty())
            .collect();
        anyhow::ensure!(
            !classes.is_empty(),
            "the machine runtime's Status reports no machine class"
        );
        let class = match machine_class {
            Some(c) => c.to_owned(),
            None => classes[0].name.clone(),
        };
        for c in &classes {
            self.ensure_class(class_object(c).into_object()).await?;
        }
        let pool = format!("{}-machines", self.namespace);
        let gate = Gate::new(upstream);
        self.plane.add_machine_poollet(
            &pool,
            &format!("iri-conformance://{}", self.namespace),
            gate.channel(),
        );
        Ok(MachineSide {
            pool,
            gate,
            runtime_name: version.runtime_name,
            classes,
            class,
        })
    }

    /// Creates a class object unless one with that name exists (then its capabilities must
    /// match, or the poollet would map it elsewhere).
    async fn ensure_class(&mut self, wanted: Object) -> anyhow::Result<()> {
        fn caps(obj: &Object) -> BTreeMap<String, i128> {
            let list = match obj {
                Object::MachineClass(c) => &c.capabilities,
                Object::VolumeClass(c) => &c.capabilities,
                _ => return BTreeMap::new(),
            };
            list.iter().map(|(k, v)| (k.clone(), v.value())).collect()
        }
        let (kind, name) = (wanted.kind(), wanted.metadata().name.clone());
        let store = self.plane.store();
        match store.create(wanted.clone()).await {
            Ok(_) => {
                self.created_classes.push((kind, name));
                Ok(())
            }
            Err(irikit_api::store::Error::AlreadyExists { .. }) => {
                let existing = store.get(kind, "", &name).await?;
                anyhow::ensure!(
                    caps(&existing) == caps(&wanted),
                    "{} {name} exists in the store with capabilities {:?}, the runtime's class has {:?}",
                    kind.as_str(),
                    caps(&existing),
                    caps(&wanted)
                );
                Ok(())
            }
            Err(err) => {
                Err(anyhow::Error::new(err).context(format!("creating {} {name}", kind.as_str())))
            }
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.plane.store()
    }

    /// The namespace of the run's objects.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The control plane.
    pub fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// The machine side, or why there is none.
    pub fn machine(&self) -> Result<&MachineSide, &str> {
        self.machine.as_ref().map_err(String::as_str)
    }

    /// The volume side, or why there is none.
    pub fn volume(&self) -> Result<&VolumeSide, &str> {
        self.volume.as_ref().map_err(String::as_str)
    }

    /// Deletes the run's Machines, then its Volumes, through the store (the poollets delete
    /// them on the runtimes), stops the control plane, deletes what the poollets could not (on
    /// the runtimes by the namespace labels, finalizers in the store), then the pools, the
    /// classes the run created and its events.
    pub async fn teardown(
        &self,
        clients: &Clients,
        rpc_timeout: Duration,
        budget: Duration,
    ) -> CleanupReport {
        let start = std::time::Instant::now();
        let mut report = CleanupReport::default();
        let store = self.store().clone();
        let in_ns = ListOptions::all().in_namespace(&self.namespace);
        // Reservations first: the poollet releases their runtime holds while it runs.
        report.deleted += self.delete_all(Kind::Reservation, &mut report.errors).await;
        for kind in [Kind::Machine, Kind::Volume] {
            report.deleted += self.delete_all(kind, &mut report.errors).await;
            // Poll the store until the poollet has released every finalizer (or the budget ends).
            let mut interval = Duration::from_millis(5);
            while store
                .list(kind, &in_ns)
                .await
                .is_ok_and(|l| !l.items.is_empty())
                && start.elapsed() < budget
            {
                tokio::time::sleep(interval).await;
                interval = (interval * 2).min(Duration::from_millis(50));
            }
        }
        if !self.plane.shutdown(Duration::from_secs(10)).await {
            report
                .errors
                .push("the control plane did not stop within 10s".to_owned());
        }
        // What the poollets did not finish: drop finalizers so the store is clean, and delete
        // the runtime objects of this namespace directly.
        for kind in [Kind::Machine, Kind::Volume] {
            let Ok(list) = store.list(kind, &in_ns).await else {
                continue;
            };
            for mut obj in list.items {
                report
                    .remaining
                    .push(format!("{} {}", kind.as_str(), obj.key()));
                obj.metadata_mut().finalizers.clear();
                let _ = store.update(obj).await;
            }
        }
        let label = |key: &str| -> std::collections::HashMap<String, String> {
            [(key.to_owned(), self.namespace.clone())].into()
        };
        if let Some(mut client) = clients.machine.clone() {
            let filter = machine::MachineFilter {
                id: String::new(),
                label_selector: label(keys::MACHINE_NAMESPACE_LABEL),
            };
            let listed = rpc(
                rpc_timeout,
                client.list_machines(machine::ListMachinesRequest {
                    filter: Some(filter),
                }),
            )
            .await
            .map(|r| r.machines)
            .unwrap_or_default();
            for md in listed.into_iter().filter_map(|m| m.metadata) {
                if md.labels.get(keys::MACHINE_NAMESPACE_LABEL) == Some(&self.namespace)
                    && md.deleted_at == 0
                {
                    let res = rpc(
                        rpc_timeout,
                        client.delete_machine(machine::DeleteMachineRequest {
                            machine_id: md.id.clone(),
                        }),
                    )
                    .await;
                    report.errors.push(outlived("machine", &md.id, res.err()));
                }
            }
        }
        if let Some(mut client) = clients.reservation.clone() {
            let filter = iri_spec::irikit::reservation::v1alpha1::ReservationFilter {
                id: String::new(),
                label_selector: label(irikit_api::reservation::IRI_RESERVATION_NAMESPACE_LABEL),
            };
            let listed = tokio::time::timeout(rpc_timeout, client.list(Some(filter)))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            for md in listed.into_iter().filter_map(|r| r.metadata) {
                if md
                    .labels
                    .get(irikit_api::reservation::IRI_RESERVATION_NAMESPACE_LABEL)
                    == Some(&self.namespace)
                {
                    let res = match tokio::time::timeout(rpc_timeout, client.delete(&md.id)).await {
                        Ok(Ok(_)) => None,
                        Ok(Err(st)) => Some(anyhow::anyhow!("{:?}: {}", st.code(), st.message())),
                        Err(_) => Some(anyhow::anyhow!("no answer within {rpc_timeout:?}")),
                    };
                    report.errors.push(outlived("reservation", &md.id, res));
                }
            }
        }
        if let Some(mut client) = clients.volume.clone() {
            let filter = volume::VolumeFilter {
                id: String::new(),
                label_selector: label(keys::VOLUMEPOOLLET_VOLUME_NAMESPACE_LABEL),
            };
            let listed = rpc(
                rpc_timeout,
                client.list_volumes(volume::ListVolumesRequest {
                    filter: Some(filter),
                }),
            )
            .await
            .map(|r| r.volumes)
            .unwrap_or_default();
            for md in listed.into_iter().filter_map(|v| v.metadata) {
                if md.labels.get(keys::VOLUMEPOOLLET_VOLUME_NAMESPACE_LABEL)
                    == Some(&self.namespace)
                    && md.deleted_at == 0
                {
                    let res = rpc(
                        rpc_timeout,
                        client.delete_volume(volume::DeleteVolumeRequest {
                            volume_id: md.id.clone(),
                        }),
                    )
                    .await;
                    report.errors.push(outlived("volume", &md.id, res.err()));
                }
            }
        }
        if let Ok(list) = store.list(Kind::Event, &in_ns).await {
            for obj in list.items {
                let _ = store
                    .delete(Kind::Event, &self.namespace, &obj.metadata().name, None)
                    .await;
            }
        }
        if let Ok(side) = &self.machine {
            let _ = store.delete(Kind::MachinePool, "", &side.pool, None).await;
        }
        if let Ok(side) = &self.volume {
            let _ = store.delete(Kind::VolumePool, "", &side.pool, None).await;
        }
        for (kind, class) in &self.created_classes {
            let _ = store.delete(*kind, "", class, None).await;
        }
        report.duration = start.elapsed();
        report
    }

    /// Deletes every object of `kind` in the namespace; returns how many deletes succeeded.
    async fn delete_all(&self, kind: Kind, errors: &mut Vec<String>) -> usize {
        let store = self.store();
        let Ok(list) = store
            .list(kind, &ListOptions::all().in_namespace(&self.namespace))
            .await
        else {
            return 0;
        };
        let mut deleted = 0;
        for obj in list.items {
            let name = &obj.metadata().name;
            match store.delete(kind, &self.namespace, name, None).await {
                Ok(_) => deleted += 1,
                Err(irikit_api::store::Error::NotFound { .. }) => {}
                Err(err) => errors.push(format!("delete {} {name}: {err}", kind.as_str())),
            }
        }
        deleted
    }
}

fn outlived(what: &str, id: &str, err: Option<anyhow::Error>) -> String {
    match err {
        None => format!("runtime {what} {id} outlived its object; deleted directly"),
        Some(err) => format!("runtime {what} {id} outlived its object; delete failed: {err:#}"),
    }
}
