//! What differs between the machine and the volume side of a poollet: the runtime client and
//! its Version, Status and ListEvents calls, the pool and class kinds, how an ironcore class
//! maps to a runtime class and what one object uses of its pool. The code both sides share is
//! written once over [`Flavor`] ([`crate::pool::PoolReconciler`], [`crate::runtime`]), as the
//! scheduler does with its own `scheduler::flavor::Flavor`.

use std::{future::Future, time::Duration};

use iri_spec::{
    event::v1alpha1 as event,
    machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient},
    volume::v1alpha1::{self as volume, volume_runtime_client::VolumeRuntimeClient},
};
use irikit_api::{
    Kind, Object, Resource, ResourceList,
    compute::{self, MachineClass, MachinePool},
    meta::{Condition, LocalObjectReference},
    quantity::Format,
    storage::{self, VolumeClass, VolumePool},
};
use tonic::transport::Channel;

use crate::error::{Result, rpc};
use crate::events::{InvolvedLabels, MACHINE_EVENT_SOURCE};
use crate::pool::machine::{capabilities_of, map_class};
use crate::pool::volume::{map_volume_class, requested_bytes, volume_class_key};

/// What one object bound to a pool uses of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// `metadata.uid` (an object counts once however often it is listed).
    pub uid: String,
    /// The object's ironcore class.
    pub class: String,
    /// How much of the class it uses (machines: 1; volumes: requested bytes).
    pub amount: i128,
}

/// The status fields of a pool the pool reconciler writes.
pub struct PoolStatusMut<'a> {
    /// `availableMachineClasses` / `availableVolumeClasses`.
    pub classes: &'a mut Vec<LocalObjectReference>,
    /// `capacity`.
    pub capacity: &'a mut ResourceList,
    /// `allocatable`.
    pub allocatable: &'a mut ResourceList,
    /// `state`.
    pub state: &'a mut String,
    /// `conditions`.
    pub conditions: &'a mut Vec<Condition>,
}

/// One side of a poollet: machines on a MachinePool or volumes on a VolumePool.
pub trait Flavor: Send + Sync + 'static {
    /// The runtime's gRPC client.
    type Client: Clone + Send + Sync + 'static;
    /// The runtime's class with its quantity (`Status` answer).
    type RuntimeClass: Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static;
    /// The ironcore pool kind.
    type Pool: Resource + Default + Clone + PartialEq + Send + Sync;
    /// The ironcore class kind.
    type Class: Resource + Send + Sync;

    /// `machine` or `volume` (logs).
    const NAME: &'static str;
    /// The kind of the objects bound to the pool.
    const OBJECT: Kind;
    /// The field selector of the objects bound to a pool.
    const POOL_REF_FIELD: &'static str;
    /// The pool's `status.state` while the poollet runs.
    const POOL_STATE: &'static str;
    /// Whether the pool carries the heartbeat's `Ready` condition (VolumePools have none, as
    /// in IronCore, §8.12).
    const READY_CONDITION: bool;
    /// The quantity format of capacity and allocatable.
    const FORMAT: Format;
    /// The labels that name the involved object of a runtime event.
    const INVOLVED: InvolvedLabels;
    /// The source component of mapped runtime events.
    const EVENT_SOURCE: &'static str;

    /// A client on `channel` that accepts responses up to [`crate::MAX_RESPONSE_BYTES`].
    fn client(channel: Channel) -> Self::Client;
    /// `Version`: the runtime's name and version.
    fn version(
        client: &Self::Client,
        timeout: Duration,
    ) -> impl Future<Output = Result<(String, String)>> + Send;
    /// `Status`: the runtime's classes.
    fn status(
        client: &Self::Client,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<Self::RuntimeClass>>> + Send;
    /// `ListEvents` for the window `from..=to` (Unix seconds).
    fn list_events(
        client: &Self::Client,
        timeout: Duration,
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<Vec<event::Event>>> + Send;
    /// `class/<kind>.<name>`.
    fn class_resource(name: &str) -> String;
    /// The quantity of the runtime class `class` maps to (§4.3), `None` when none does.
    fn mapped_quantity(class: &Self::Class, runtime: &[Self::RuntimeClass]) -> Option<i64>;
    /// What `obj` uses of pool `pool`, `None` when it is not bound there or uses nothing.
    fn usage(obj: &Object, pool: &str) -> Option<Usage>;
    /// The pool's status fields.
    fn pool_status(pool: &mut Self::Pool) -> PoolStatusMut<'_>;
    /// The pool's `spec.providerID`.
    fn provider_id(pool: &mut Self::Pool) -> &mut String;
}

/// The flavour's client and its Version, Status and ListEvents calls, which have the same
/// shape in both IRI services (`$iri`: the service's proto module; `$classes`: the `Status`
/// field with the classes).
macro_rules! runtime_calls {
    ($iri:ident, $client:ident, $classes:ident) => {
        fn client(channel: Channel) -> Self::Client {
            $client::new(channel).max_decoding_message_size(crate::MAX_RESPONSE_BYTES)
        }

        async fn version(client: &Self::Client, timeout: Duration) -> Result<(String, String)> {
            let mut client = client.clone();
            let request = $iri::VersionRequest::default();
            let version = rpc("Version", timeout, client.version(request)).await?;
            Ok((version.runtime_name, version.runtime_version))
        }

        async fn status(
            client: &Self::Client,
            timeout: Duration,
        ) -> Result<Vec<Self::RuntimeClass>> {
            let mut client = client.clone();
            let status = rpc("Status", timeout, client.status($iri::StatusRequest {})).await?;
            Ok(status.$classes)
        }

        async fn list_events(
            client: &Self::Client,
            timeout: Duration,
            from: i64,
            to: i64,
        ) -> Result<Vec<event::Event>> {
            let mut client = client.clone();
            let request = $iri::ListEventsRequest {
                filter: Some($iri::EventFilter {
                    events_from_time: from,
                    events_to_time: to,
                    ..$iri::EventFilter::default()
                }),
            };
            Ok(rpc("ListEvents", timeout, client.list_events(request))
                .await?
                .events)
        }
    };
}

/// The machinepoollet's side.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineFlavor;

impl Flavor for MachineFlavor {
    type Client = MachineRuntimeClient<Channel>;
    type RuntimeClass = machine::MachineClassStatus;
    type Pool = MachinePool;
    type Class = MachineClass;

    const NAME: &'static str = "machine";
    const OBJECT: Kind = Kind::Machine;
    const POOL_REF_FIELD: &'static str = "spec.machinePoolRef.name";
    const POOL_STATE: &'static str = "Ready";
    const READY_CONDITION: bool = true;
    const FORMAT: Format = Format::DecimalSI;
    const INVOLVED: InvolvedLabels = InvolvedLabels::MACHINE;
    const EVENT_SOURCE: &'static str = MACHINE_EVENT_SOURCE;

    runtime_calls!(machine, MachineRuntimeClient, machine_class_status);

    fn class_resource(name: &str) -> String {
        compute::class_resource(name)
    }

    fn mapped_quantity(class: &MachineClass, runtime: &[Self::RuntimeClass]) -> Option<i64> {
        map_class(&class.metadata.name, &capabilities_of(class), runtime)
            .ok()
            .map(|c| c.quantity)
    }

    fn usage(obj: &Object, pool: &str) -> Option<Usage> {
        let Object::Machine(m) = obj else { return None };
        m.spec
            .machine_pool_ref
            .as_ref()
            .is_some_and(|r| r.name == pool)
            .then(|| Usage {
                uid: m.metadata.uid.clone(),
                class: m.spec.machine_class_ref.name.clone(),
                amount: 1,
            })
    }

    fn pool_status(pool: &mut MachinePool) -> PoolStatusMut<'_> {
        let status = &mut pool.status;
        PoolStatusMut {
            classes: &mut status.available_machine_classes,
            capacity: &mut status.capacity,
            allocatable: &mut status.allocatable,
            state: &mut status.state,
            conditions: &mut status.conditions,
        }
    }

    fn provider_id(pool: &mut MachinePool) -> &mut String {
        &mut pool.spec.provider_id
    }
}

/// The volumepoollet's side.
#[derive(Debug, Clone, Copy, Default)]
pub struct VolumeFlavor;

impl Flavor for VolumeFlavor {
    type Client = VolumeRuntimeClient<Channel>;
    type RuntimeClass = volume::VolumeClassStatus;
    type Pool = VolumePool;
    type Class = VolumeClass;

    const NAME: &'static str = "volume";
    const OBJECT: Kind = Kind::Volume;
    const POOL_REF_FIELD: &'static str = "spec.volumePoolRef.name";
    const POOL_STATE: &'static str = "Available";
    const READY_CONDITION: bool = false;
    const FORMAT: Format = Format::BinarySI;
    const INVOLVED: InvolvedLabels = InvolvedLabels::VOLUME;
    const EVENT_SOURCE: &'static str = "volumepoollet";

    runtime_calls!(volume, VolumeRuntimeClient, volume_class_status);

    fn class_resource(name: &str) -> String {
        storage::class_resource(name)
    }

    fn mapped_quantity(class: &VolumeClass, runtime: &[Self::RuntimeClass]) -> Option<i64> {
        map_volume_class(&class.metadata.name, volume_class_key(class), runtime)
            .ok()
            .map(|c| c.quantity)
    }

    fn usage(obj: &Object, pool: &str) -> Option<Usage> {
        let Object::Volume(v) = obj else { return None };
        let class = v.spec.volume_class_ref.as_ref()?;
        v.spec
            .volume_pool_ref
            .as_ref()
            .is_some_and(|r| r.name == pool)
            .then(|| Usage {
                uid: v.metadata.uid.clone(),
                class: class.name.clone(),
                amount: i128::from(requested_bytes(v)),
            })
    }

    fn pool_status(pool: &mut VolumePool) -> PoolStatusMut<'_> {
        let status = &mut pool.status;
        PoolStatusMut {
            classes: &mut status.available_volume_classes,
            capacity: &mut status.capacity,
            allocatable: &mut status.allocatable,
            state: &mut status.state,
            conditions: &mut status.conditions,
        }
    }

    fn provider_id(pool: &mut VolumePool) -> &mut String {
        &mut pool.spec.provider_id
    }
}
