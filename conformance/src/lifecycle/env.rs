//! The lifecycle environment of one run: the embedded [`ControlPlane`] on the configured
//! store, MachineClass objects matching the runtime's classes, and a machinepoollet that
//! reaches the runtime under test through a [`Gate`]. Every object lives in a namespace named
//! after the run id and a pool named after it, so runs sharing an etcd do not meet.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context as _;
use iri_spec::{keys, machine::v1alpha1 as machine};
use irikit_api::{
    Kind, ListOptions, Object, Store, StoreExt,
    compute::{Machine, MachineClass},
    meta::ObjectMeta,
    quantity::{Format, Quantity},
};

use crate::{
    case::Service,
    ctx::Clients,
    lifecycle::{
        gate::{Gate, Upstream},
        plane::{ControlPlane, PlaneConfig},
    },
    runner::CleanupReport,
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

/// The environment of one lifecycle run.
#[derive(Debug)]
pub struct Env {
    plane: ControlPlane,
    namespace: String,
    machine: Result<MachineSide, String>,
    created_classes: Vec<String>,
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
        machine_class: Option<&str>,
        run_id: &str,
        rpc_timeout: Duration,
    ) -> anyhow::Result<Env> {
        let store = irikit_api::store::open(&config.store)
            .await
            .with_context(|| format!("opening the store {}", config.store))?;
        let plane = ControlPlane::start(store, config.plane.clone());
        let namespace = dns_part(run_id);
        let mut env = Env {
            plane,
            machine: Err("no machine runtime endpoint".to_owned()),
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
        Ok(env)
    }

    async fn start_machine_side(
        &mut self,
        mut client: machine::machine_runtime_client::MachineRuntimeClient<
            tonic::transport::Channel,
        >,
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
            self.ensure_class(c).await?;
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

    /// Creates the MachineClass for `class` unless one with that name exists (then its
    /// capabilities must match, or the poollet would map it elsewhere).
    async fn ensure_class(&mut self, class: &RuntimeClass) -> anyhow::Result<()> {
        let store = self.plane.store();
        let wanted = class_object(class);
        match store.create_typed(wanted.clone()).await {
            Ok(_) => {
                self.created_classes.push(class.name.clone());
                Ok(())
            }
            Err(irikit_api::store::Error::AlreadyExists { .. }) => {
                let existing: MachineClass = store.get_typed("", &class.name).await?;
                let value = |c: &MachineClass| {
                    c.capabilities
                        .iter()
                        .map(|(k, v)| (k.clone(), v.value()))
                        .collect::<BTreeMap<_, _>>()
                };
                anyhow::ensure!(
                    value(&existing) == value(&wanted),
                    "MachineClass {} exists in the store with capabilities {:?}, the runtime's class has {:?}",
                    class.name,
                    value(&existing),
                    value(&wanted)
                );
                Ok(())
            }
            Err(err) => {
                Err(anyhow::Error::new(err)
                    .context(format!("creating MachineClass {}", class.name)))
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

    /// Deletes the run's Machines through the store (the poollet deletes them on the
    /// runtime), stops the control plane, deletes what the poollet could not (on the runtime
    /// by the machine-namespace label, finalizers in the store), then the pool, the classes
    /// the run created and its events.
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
        let names = |list: irikit_api::store::ObjectList| -> Vec<String> {
            list.items
                .iter()
                .map(|o| o.metadata().name.clone())
                .collect()
        };
        if let Ok(list) = store.list(Kind::Machine, &in_ns).await {
            for name in names(list) {
                match store
                    .delete(Kind::Machine, &self.namespace, &name, None)
                    .await
                {
                    Ok(_) => report.deleted += 1,
                    Err(irikit_api::store::Error::NotFound { .. }) => {}
                    Err(err) => report.errors.push(format!("delete Machine {name}: {err}")),
                }
            }
        }
        // Poll the store until the poollet has released every finalizer (or the budget ends).
        let mut interval = Duration::from_millis(5);
        loop {
            let left = store
                .list(Kind::Machine, &in_ns)
                .await
                .map(names)
                .unwrap_or_default();
            if left.is_empty() || start.elapsed() >= budget || self.plane.token().is_cancelled() {
                break;
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(Duration::from_millis(50));
        }
        if !self.plane.shutdown(Duration::from_secs(10)).await {
            report
                .errors
                .push("the control plane did not stop within 10s".to_owned());
        }
        // What the poollet did not finish: drop finalizers so the store is clean, and delete
        // the runtime machines of this namespace directly.
        if let Ok(list) = store.list(Kind::Machine, &in_ns).await {
            for obj in list.items {
                let name = obj.metadata().name.clone();
                report
                    .remaining
                    .push(format!("Machine {}/{name}", self.namespace));
                if let Object::Machine(mut m) = obj {
                    m.metadata.finalizers.clear();
                    let _ = store.update_typed::<Machine>(m).await;
                }
            }
        }
        if let Some(mut client) = clients.machine.clone() {
            let filter = machine::MachineFilter {
                id: String::new(),
                label_selector: [(
                    keys::MACHINE_NAMESPACE_LABEL.to_owned(),
                    self.namespace.clone(),
                )]
                .into(),
            };
            if let Ok(listed) = rpc(
                rpc_timeout,
                client.list_machines(machine::ListMachinesRequest {
                    filter: Some(filter),
                }),
            )
            .await
            {
                for m in listed.machines {
                    let Some(md) = m.metadata else { continue };
                    if md.labels.get(keys::MACHINE_NAMESPACE_LABEL) != Some(&self.namespace)
                        || md.deleted_at != 0
                    {
                        continue;
                    }
                    match rpc(
                        rpc_timeout,
                        client.delete_machine(machine::DeleteMachineRequest {
                            machine_id: md.id.clone(),
                        }),
                    )
                    .await
                    {
                        Ok(_) => report.errors.push(format!(
                            "runtime machine {} outlived its Machine; deleted directly",
                            md.id
                        )),
                        Err(err) => report
                            .errors
                            .push(format!("delete runtime machine {}: {err:#}", md.id)),
                    }
                }
            }
        }
        if let Ok(list) = store.list(Kind::Event, &in_ns).await {
            for name in names(list) {
                let _ = store
                    .delete(Kind::Event, &self.namespace, &name, None)
                    .await;
            }
        }
        if let Ok(side) = &self.machine {
            let _ = store.delete(Kind::MachinePool, "", &side.pool, None).await;
        }
        for class in &self.created_classes {
            let _ = store.delete(Kind::MachineClass, "", class, None).await;
        }
        report.duration = start.elapsed();
        report
    }
}
