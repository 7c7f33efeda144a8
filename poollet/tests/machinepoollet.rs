//! The machinepoollet against iri-mock (in process) and the memory store: pool announcement,
//! heartbeat, create with labels and power, status propagation, power off, delete through the
//! finalizer, orphan GC and duplicate handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{sync::Arc, time::Duration};

use common::{Env, WAIT, create_on_runtime, machine_class as class, wait_for, wait_gone};
use iri_mock::{Effect, FaultRule, Method, MockRuntime, Trigger};
use iri_spec::{
    keys,
    machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient},
    meta::v1alpha1 as meta,
};
use irikit_api::{
    Kind, Store, StoreExt,
    compute::{Machine, MachinePool, Power},
    meta::{LocalObjectReference, ObjectMeta, condition_status},
    store::memory::MemoryStore,
};
use poollet::{
    Config, MachinePoollet, ObjectRef, Reconciler,
    machine::{MachineConfig, MachineReconciler},
    pool::RuntimeView,
};

const POOL: &str = "pool-a";
const NS: &str = "default";

async fn seeded_store() -> Arc<dyn Store> {
    seed(Arc::new(MemoryStore::new())).await
}

async fn seed(store: Arc<dyn Store>) -> Arc<dyn Store> {
    // Mock defaults: x3-small (2, 8Gi, 100), x3-medium (4, 16Gi, 50), x3-large (8, 32Gi, 20).
    store
        .create_typed(class("x3-small", "2", "8Gi"))
        .await
        .unwrap();
    // Another name with the capabilities of x3-medium maps to it (unique match).
    store
        .create_typed(class("medium", "4", "16Gi"))
        .await
        .unwrap();
    // No runtime class has these capabilities.
    store
        .create_typed(class("huge", "64", "512Gi"))
        .await
        .unwrap();
    store
}

fn config() -> Config {
    let mut config = Config::new(POOL, "ironcore://pool-a");
    config.pool.topology_region = "eu-1".into();
    config.pool.topology_zone = "eu-1a".into();
    config.pool.heartbeat_interval = Duration::from_millis(200);
    config.pool.status_timeout = Duration::from_millis(100);
    config.relist_period = Duration::from_millis(50);
    config.machine.converging_requeue = Duration::from_millis(20);
    config.machine.prerequisite_requeue = Duration::from_millis(100);
    config
}

async fn start_with(mock: MockRuntime, store: Arc<dyn Store>) -> Env {
    start_with_config(mock, store, config()).await
}

async fn start_with_config(mock: MockRuntime, store: Arc<dyn Store>, config: Config) -> Env {
    let poollet = MachinePoollet::new(store.clone(), mock.machine_channel(), config);
    Env::spawn(store, mock, |token| poollet.run(token))
}

async fn start() -> Env {
    let mock = common::mock().await;
    start_with(mock, seeded_store().await).await
}

fn new_machine(name: &str, class: &str, power: Power) -> Machine {
    let mut m = Machine {
        metadata: ObjectMeta::namespaced(NS, name),
        ..Machine::default()
    };
    m.spec.machine_class_ref = LocalObjectReference::new(class);
    m.spec.machine_pool_ref = Some(LocalObjectReference::new(POOL));
    m.spec.power = power;
    m
}

fn quantities(list: &irikit_api::ResourceList) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

/// The condition of `type_` (the test fails without one).
fn condition<'a>(
    conditions: &'a [irikit_api::meta::Condition],
    type_: &str,
) -> &'a irikit_api::meta::Condition {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

/// Waits for the pool to turn `Ready=False`.
async fn wait_pool_not_ready(store: &Arc<dyn Store>) -> MachinePool {
    wait_for(
        store,
        "",
        POOL,
        |p: &MachinePool| condition_status(&p.status.conditions, "Ready") == Some("False"),
        "pool not ready",
    )
    .await
}

fn is_running(m: &Machine) -> bool {
    m.status.state == "Running" && m.status.observed_generation == m.metadata.generation
}

fn iri_label<'a>(m: &'a machine::Machine, key: &str) -> &'a str {
    m.metadata
        .as_ref()
        .and_then(|md| md.labels.get(key))
        .map_or("", String::as_str)
}

#[tokio::test]
async fn pool_is_announced_with_classes_capacity_and_heartbeat() {
    let env = start().await;
    let pool: MachinePool = wait_for(
        &env.store,
        "",
        POOL,
        |p: &MachinePool| {
            condition_status(&p.status.conditions, "Ready") == Some("True")
                && !p.status.capacity.is_empty()
        },
        "pool ready with capacity",
    )
    .await;
    assert_eq!(pool.spec.provider_id, "ironcore://pool-a");
    assert_eq!(
        pool.metadata.labels.get(keys::TOPOLOGY_REGION_LABEL),
        Some(&"eu-1".to_string())
    );
    assert_eq!(
        pool.metadata.labels.get(keys::TOPOLOGY_ZONE_LABEL),
        Some(&"eu-1a".to_string())
    );
    assert_eq!(pool.status.state, "Ready");
    let mut classes: Vec<&str> = pool
        .status
        .available_machine_classes
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    classes.sort_unstable();
    assert_eq!(classes, ["medium", "x3-small"]);
    let expected = vec![
        ("class/machine.medium".to_string(), "50".to_string()),
        ("class/machine.x3-small".to_string(), "100".to_string()),
    ];
    assert_eq!(quantities(&pool.status.capacity), expected);
    assert_eq!(quantities(&pool.status.allocatable), expected);
    let ready = condition(&pool.status.conditions, "Ready");
    assert_eq!(ready.reason, "HeartbeatReceived");

    // The runtime stops answering Status: Ready turns False with RuntimeUnreachable.
    let fault = env.mock.add_fault(FaultRule::new(
        Method::MachineStatus,
        Trigger::Always,
        Effect::Hang,
    ));
    let pool = wait_pool_not_ready(&env.store).await;
    let ready = condition(&pool.status.conditions, "Ready");
    assert_eq!(ready.reason, "RuntimeUnreachable");
    assert!(!ready.message.is_empty());
    assert_eq!(
        quantities(&pool.status.capacity),
        expected,
        "capacity is kept"
    );
    env.mock.remove_fault(fault);
    wait_for(
        &env.store,
        "",
        POOL,
        |p: &MachinePool| condition_status(&p.status.conditions, "Ready") == Some("True"),
        "pool ready again",
    )
    .await;
    env.stop().await;
}

#[tokio::test]
async fn machine_is_created_with_labels_and_reaches_running() {
    let env = start().await;
    let created = env
        .store
        .create_typed(new_machine("vm-1", "medium", Power::On))
        .await
        .unwrap();
    let m: Machine = wait_for(&env.store, NS, "vm-1", is_running, "machine running").await;
    assert_eq!(m.status.observed_generation, 1);
    assert!(
        m.metadata
            .finalizers
            .contains(&keys::MACHINE_FINALIZER.to_string())
    );
    let ready = condition(&m.status.conditions, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Running")
    );

    let iri_machines = env.mock.machines();
    assert_eq!(iri_machines.len(), 1);
    let iri = &iri_machines[0];
    let md = iri.metadata.clone().unwrap();
    assert_eq!(m.status.machine_id, format!("iri-mock://{}", md.id));
    assert_eq!(
        iri_label(iri, keys::MACHINE_UID_LABEL),
        created.metadata.uid
    );
    assert_eq!(iri_label(iri, keys::MACHINE_NAMESPACE_LABEL), NS);
    assert_eq!(iri_label(iri, keys::MACHINE_NAME_LABEL), "vm-1");
    assert_eq!(
        md.annotations.get(keys::MACHINE_GENERATION_ANNOTATION),
        Some(&"1".to_string())
    );
    assert!(
        md.annotations
            .contains_key(keys::IRI_MACHINE_GENERATION_ANNOTATION)
    );
    let spec = iri.spec.clone().unwrap();
    assert_eq!(spec.class, "x3-medium", "the runtime's class name is sent");
    assert_eq!(spec.power, machine::Power::On as i32);

    // The pool's allocatable counts the machine.
    wait_for(
        &env.store,
        "",
        POOL,
        |p: &MachinePool| {
            p.status
                .allocatable
                .get("class/machine.medium")
                .map(ToString::to_string)
                == Some("49".into())
        },
        "allocatable 49",
    )
    .await;
    env.stop().await;
}

#[tokio::test]
async fn power_off_propagates_and_create_honours_requested_power() {
    let env = start().await;
    let m: Machine = env
        .create_and_wait(
            new_machine("vm-1", "x3-small", Power::On),
            is_running,
            "machine running",
        )
        .await;
    let mut off = m.clone();
    off.spec.power = Power::Off;
    env.store.update_typed(off).await.unwrap();
    let m: Machine = wait_for(
        &env.store,
        NS,
        "vm-1",
        |m: &Machine| m.status.state == "Terminated" && m.status.observed_generation == 2,
        "machine powered off",
    )
    .await;
    let ready = condition(&m.status.conditions, "Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(env.mock.call_count(Method::UpdateMachinePower), 1);

    // §8.7: a machine created with power Off is created powered off, not booted first.
    env.store
        .create_typed(new_machine("vm-2", "x3-small", Power::Off))
        .await
        .unwrap();
    let m: Machine = wait_for(
        &env.store,
        NS,
        "vm-2",
        |m: &Machine| m.status.state == "Terminated" && m.status.observed_generation == 1,
        "second machine off",
    )
    .await;
    let id = m.status.machine_id.split("://").nth(1).unwrap().to_string();
    let iri = env.mock.machine(&id).unwrap();
    assert_eq!(iri.spec.unwrap().power, machine::Power::Off as i32);
    assert_eq!(
        env.mock.call_count(Method::UpdateMachinePower),
        1,
        "no power correction after create"
    );
    env.stop().await;
}

#[tokio::test]
async fn stopped_maps_to_shutdown() {
    let mock = MockRuntime::builder()
        .power_off_stopped(true)
        .start_in_process()
        .await
        .unwrap();
    let env = start_with(mock, seeded_store().await).await;
    env.store
        .create_typed(new_machine("vm-1", "x3-small", Power::Off))
        .await
        .unwrap();
    wait_for(
        &env.store,
        NS,
        "vm-1",
        |m: &Machine| m.status.state == "Shutdown" && m.status.observed_generation == 1,
        "machine shut down",
    )
    .await;
    env.stop().await;
}

#[tokio::test]
async fn delete_goes_through_the_finalizer() {
    let env = start().await;
    env.create_and_wait(
        new_machine("vm-1", "x3-small", Power::On),
        is_running,
        "machine running",
    )
    .await;
    assert_eq!(env.mock.machine_count(), 1);
    let deleting = env
        .store
        .delete(Kind::Machine, NS, "vm-1", None)
        .await
        .unwrap();
    assert!(deleting.is_some(), "the finalizer holds the object");
    wait_gone(&env.store, Kind::Machine, NS, "vm-1").await;
    // The finalizer is dropped only once the runtime lists no machine for the uid.
    let mut client = MachineRuntimeClient::new(env.mock.machine_channel());
    let listed = client
        .list_machines(machine::ListMachinesRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.machines.is_empty());
    assert!(env.mock.call_count(Method::DeleteMachine) >= 1);
    env.stop().await;
}

#[tokio::test]
async fn machines_of_other_pools_and_missing_classes_are_not_created() {
    let env = start().await;
    let mut other = new_machine("elsewhere", "x3-small", Power::On);
    other.spec.machine_pool_ref = Some(LocalObjectReference::new("pool-b"));
    env.store.create_typed(other).await.unwrap();
    env.store
        .create_typed(new_machine("no-class", "missing", Power::On))
        .await
        .unwrap();
    env.store
        .create_typed(new_machine("vm-1", "x3-small", Power::On))
        .await
        .unwrap();
    // vm-1 running proves the poollet is working; the others are left alone.
    wait_for(&env.store, NS, "vm-1", is_running, "machine running").await;
    let names: Vec<String> = env
        .mock
        .machines()
        .iter()
        .map(|m| iri_label(m, keys::MACHINE_NAME_LABEL).to_string())
        .collect();
    assert_eq!(names, ["vm-1"]);
    let missing: Machine = env.store.get_typed(NS, "no-class").await.unwrap();
    assert!(missing.status.machine_id.is_empty());
    // Once the class appears, the machine is created.
    env.store
        .create_typed(class("missing", "2", "8Gi"))
        .await
        .unwrap();
    wait_for(
        &env.store,
        NS,
        "no-class",
        is_running,
        "machine with late class",
    )
    .await;
    let elsewhere: Machine = env.store.get_typed(NS, "elsewhere").await.unwrap();
    assert!(elsewhere.metadata.finalizers.is_empty());
    env.stop().await;
}

fn iri_machine(uid: &str, namespace: &str, name: &str) -> machine::Machine {
    machine::Machine {
        metadata: Some(meta::ObjectMetadata {
            labels: [
                (keys::MACHINE_UID_LABEL.to_string(), uid.to_string()),
                (
                    keys::MACHINE_NAMESPACE_LABEL.to_string(),
                    namespace.to_string(),
                ),
                (keys::MACHINE_NAME_LABEL.to_string(), name.to_string()),
            ]
            .into(),
            annotations: [
                (
                    keys::MACHINE_GENERATION_ANNOTATION.to_string(),
                    "1".to_string(),
                ),
                (
                    keys::IRI_MACHINE_GENERATION_ANNOTATION.to_string(),
                    "0".to_string(),
                ),
            ]
            .into(),
            ..meta::ObjectMetadata::default()
        }),
        spec: Some(machine::MachineSpec {
            class: "x3-small".into(),
            ..machine::MachineSpec::default()
        }),
        status: None,
    }
}

async fn list_all(mock: &MockRuntime) -> Vec<machine::Machine> {
    MachineRuntimeClient::new(mock.machine_channel())
        .list_machines(machine::ListMachinesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .machines
}

/// Three reconciles of `key` (create, update, settled), then the Machine.
async fn settle(
    reconciler: &MachineReconciler,
    store: &Arc<dyn Store>,
    key: &ObjectRef,
) -> Machine {
    for _ in 0..3 {
        reconciler.reconcile(key).await.unwrap();
    }
    store
        .get_typed::<Machine>(&key.namespace, &key.name)
        .await
        .unwrap()
}

fn reconciler(store: &Arc<dyn Store>, mock: &MockRuntime) -> MachineReconciler {
    MachineReconciler::new(
        store.clone(),
        MachineRuntimeClient::new(mock.machine_channel()),
        "iri-mock",
        RuntimeView::default(),
        MachineConfig::new(POOL),
    )
}

#[tokio::test]
async fn orphans_are_collected_when_their_machine_is_gone_or_replaced() {
    let mock = MockRuntime::builder().start_in_process().await.unwrap();
    let store = seeded_store().await;
    // An IRI machine whose Machine never existed, and one whose Machine was re-created under
    // the same name (new uid).
    create_on_runtime(&mock, iri_machine("gone-uid", NS, "ghost")).await;
    create_on_runtime(&mock, iri_machine("old-uid", NS, "vm-1")).await;
    let current = store
        .create_typed(new_machine("vm-1", "x3-small", Power::On))
        .await
        .unwrap();
    let reconciler = reconciler(&store, &mock);
    reconciler
        .reconcile(&ObjectRef::new(NS, "ghost"))
        .await
        .unwrap();
    reconciler
        .reconcile(&ObjectRef::new(NS, "vm-1"))
        .await
        .unwrap();
    let uids: Vec<String> = list_all(&mock)
        .await
        .iter()
        .map(|m| iri_label(m, keys::MACHINE_UID_LABEL).to_string())
        .collect();
    assert_eq!(
        uids,
        [current.metadata.uid],
        "orphans deleted, vm-1 created"
    );
}

#[tokio::test]
async fn a_runtime_that_drops_labels_gets_one_machine_not_one_per_reconcile() {
    let mock = MockRuntime::builder()
        .runtime_name("iri-mock")
        .mutant(iri_mock::Mutant::LabelsDropped)
        .start_in_process()
        .await
        .unwrap();
    let store = seeded_store().await;
    store
        .create_typed(new_machine("vm-1", "x3-small", Power::On))
        .await
        .unwrap();
    let reconciler = reconciler(&store, &mock);
    let key = ObjectRef::new(NS, "vm-1");
    reconciler.reconcile(&key).await.unwrap();
    assert_eq!(list_all(&mock).await.len(), 1);
    for _ in 0..5 {
        let err = reconciler.reconcile(&key).await.unwrap_err();
        assert!(matches!(err, poollet::Error::LabelsLost { .. }), "{err:?}");
    }
    assert_eq!(
        mock.call_count(Method::CreateMachine),
        1,
        "no second machine"
    );
    let (events, _) = store
        .list_typed::<irikit_api::core::Event>(&irikit_api::ListOptions::all())
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.reason == poollet::machine::REASON_RUNTIME_LABELS_LOST
                && e.type_ == "Warning"),
        "{events:?}"
    );
    // Deleting the Machine deletes the machine its status names, labels or not.
    store.delete(Kind::Machine, NS, "vm-1", None).await.unwrap();
    for _ in 0..50 {
        reconciler.reconcile(&key).await.unwrap();
        if list_all(&mock).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(list_all(&mock).await.is_empty());
    assert!(mock.call_count(Method::DeleteMachine) >= 1);
}

#[tokio::test]
async fn orphans_are_found_by_the_runtime_relist() {
    let mock = MockRuntime::builder().start_in_process().await.unwrap();
    create_on_runtime(&mock, iri_machine("gone-uid", NS, "ghost")).await;
    let env = start_with(mock, seeded_store().await).await;
    // The relist enqueues "ghost"; its reconcile deletes the orphan. Creating a machine after
    // it and waiting for Running orders the check after at least one relist.
    env.create_and_wait(
        new_machine("vm-1", "x3-small", Power::On),
        is_running,
        "machine running",
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let names: Vec<String> = list_all(&env.mock)
            .await
            .iter()
            .map(|m| iri_label(m, keys::MACHINE_NAME_LABEL).to_string())
            .collect();
        if names == ["vm-1"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "orphan not collected: {names:?}"
        );
        // Bounded wait for the next relist period (no event to wait on in the runtime).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.stop().await;
}

#[tokio::test]
async fn duplicate_runtime_machines_for_one_uid_are_reduced_to_one() {
    let mock = MockRuntime::builder().start_in_process().await.unwrap();
    let store = seeded_store().await;
    let current = store
        .create_typed(new_machine("vm-1", "x3-small", Power::On))
        .await
        .unwrap();
    let a = create_on_runtime(&mock, iri_machine(&current.metadata.uid, NS, "vm-1")).await;
    let b = create_on_runtime(&mock, iri_machine(&current.metadata.uid, NS, "vm-1")).await;
    let reconciler = reconciler(&store, &mock);
    reconciler
        .reconcile(&ObjectRef::new(NS, "vm-1"))
        .await
        .unwrap();
    let ids: Vec<String> = list_all(&mock)
        .await
        .iter()
        .map(|m| m.metadata.clone().unwrap().id)
        .collect();
    assert_eq!(ids.len(), 1, "one machine is kept");
    assert!(ids[0] == a || ids[0] == b);
    let m: Machine = store.get_typed(NS, "vm-1").await.unwrap();
    assert_eq!(m.status.machine_id, format!("iri-mock://{}", ids[0]));
}

/// §3.4 with the §8.5 fix: after a spec push, status waits until the runtime's
/// `observed_generation` reaches the generation *after* the push.
#[tokio::test(start_paused = true)]
async fn status_waits_for_the_runtime_to_process_the_spec() {
    let delay = Duration::from_secs(10);
    let mock = MockRuntime::builder()
        .delays(iri_mock::Delays {
            provision: Duration::ZERO,
            apply: delay,
            power: delay,
            terminate: Duration::ZERO,
        })
        .start_in_process()
        .await
        .unwrap();
    let store = seeded_store().await;
    let reconciler = reconciler(&store, &mock);
    let key = ObjectRef::new(NS, "vm-1");
    store
        .create_typed(new_machine("vm-1", "x3-small", Power::On))
        .await
        .unwrap();
    reconciler.reconcile(&key).await.unwrap();
    reconciler.reconcile(&key).await.unwrap();
    let m: Machine = store.get_typed(NS, "vm-1").await.unwrap();
    assert_eq!(
        (m.status.state.as_str(), m.status.observed_generation),
        ("Running", 1)
    );

    let mut off = m;
    off.spec.power = Power::Off;
    store.update_typed(off).await.unwrap();
    reconciler.reconcile(&key).await.unwrap();
    let m: Machine = store.get_typed(NS, "vm-1").await.unwrap();
    assert_eq!(m.metadata.generation, 2);
    assert_eq!(
        (m.status.state.as_str(), m.status.observed_generation),
        ("Running", 1),
        "status is not published before the runtime processed the power change"
    );
    let iri = &mock.machines()[0];
    let annotations = &iri.metadata.as_ref().unwrap().annotations;
    assert_eq!(
        annotations.get(keys::MACHINE_GENERATION_ANNOTATION),
        Some(&"2".to_string())
    );
    assert_eq!(
        annotations.get(keys::IRI_MACHINE_GENERATION_ANNOTATION),
        Some(&iri.metadata.as_ref().unwrap().generation.to_string()),
        "the runtime generation after the push"
    );

    tokio::time::advance(delay).await;
    reconciler.reconcile(&key).await.unwrap();
    let m: Machine = store.get_typed(NS, "vm-1").await.unwrap();
    assert_eq!(
        (m.status.state.as_str(), m.status.observed_generation),
        ("Terminated", 2)
    );
}

/// The whole lifecycle on one store: announce, create, Running, power off, delete.
async fn lifecycle(store: Arc<dyn Store>) {
    let mock = common::mock().await;
    let env = start_with(mock, seed(store).await).await;
    wait_for(
        &env.store,
        "",
        POOL,
        |p: &MachinePool| {
            condition_status(&p.status.conditions, "Ready") == Some("True")
                && p.status.capacity.len() == 2
        },
        "pool announced",
    )
    .await;
    let m: Machine = env
        .create_and_wait(
            new_machine("vm-1", "x3-small", Power::On),
            is_running,
            "machine running",
        )
        .await;
    let mut off = m;
    off.spec.power = Power::Off;
    env.store.update_typed(off).await.unwrap();
    wait_for(
        &env.store,
        NS,
        "vm-1",
        |m: &Machine| m.status.state == "Terminated" && m.status.observed_generation == 2,
        "machine off",
    )
    .await;
    env.store
        .delete(Kind::Machine, NS, "vm-1", None)
        .await
        .unwrap();
    wait_gone(&env.store, Kind::Machine, NS, "vm-1").await;
    assert!(list_all(&env.mock).await.is_empty());
    env.stop().await;
}

common::memory_and_etcd!(lifecycle_memory, lifecycle_etcd, "/poollet-test", lifecycle);

#[tokio::test]
async fn create_waits_for_the_ignition_secret_and_sends_disks_and_hostname() {
    use base64::Engine;
    use irikit_api::{
        compute::{GuestConfig, LocalDisk, Volume},
        core::Secret,
        meta::SecretKeySelector,
    };
    let mock = MockRuntime::builder().start_in_process().await.unwrap();
    let store = seeded_store().await;
    let reconciler = reconciler(&store, &mock);
    let key = ObjectRef::new(NS, "vm-1");
    let mut m = new_machine("vm-1", "x3-small", Power::On);
    m.spec.ignition_ref = Some(SecretKeySelector {
        name: "ign".into(),
        key: String::new(),
    });
    m.spec.volumes = vec![Volume {
        name: "root".into(),
        device: Some("oda".into()),
        local_disk: Some(LocalDisk {
            size_limit: Some("10Gi".parse().unwrap()),
            image: "ghcr.io/ironcore-dev/os-images/gardenlinux:latest".into(),
        }),
        ..Volume::default()
    }];
    m.spec.guest_config = Some(GuestConfig {
        hostname: "vm-one".into(),
    });
    store.create_typed(m).await.unwrap();

    reconciler.reconcile(&key).await.unwrap();
    assert_eq!(
        mock.machine_count(),
        0,
        "no create without the ignition secret"
    );

    let secret = Secret {
        metadata: ObjectMeta::namespaced(NS, "ign"),
        data: [(
            "ignition.yaml".to_string(),
            base64::engine::general_purpose::STANDARD.encode(b"variant: fcos"),
        )]
        .into(),
        ..Secret::default()
    };
    store.create_typed(secret).await.unwrap();
    reconciler.reconcile(&key).await.unwrap();
    let machines = mock.machines();
    assert_eq!(machines.len(), 1);
    let spec = machines[0].spec.clone().unwrap();
    assert_eq!(spec.ignition_data, b"variant: fcos");
    assert_eq!(spec.guest_config.unwrap().hostname, "vm-one");
    assert_eq!(spec.volumes.len(), 1);
    let volume = &spec.volumes[0];
    assert_eq!(
        (volume.name.as_str(), volume.device.as_str()),
        ("root", "oda")
    );
    let disk = volume.local_disk.clone().unwrap();
    assert_eq!(disk.size_bytes, 10 << 30);
    assert_eq!(
        disk.image.unwrap().image,
        "ghcr.io/ironcore-dev/os-images/gardenlinux:latest"
    );
}

#[tokio::test]
async fn a_new_ignition_secret_triggers_the_waiting_machine() {
    use irikit_api::{core::Secret, meta::SecretKeySelector};
    let mock = MockRuntime::builder().start_in_process().await.unwrap();
    let mut config = config();
    // Only the Secret watch can wake the machine up in time.
    config.machine.prerequisite_requeue = Duration::from_secs(3600);
    let env = start_with_config(mock, seeded_store().await, config).await;
    let mut m = new_machine("vm-1", "x3-small", Power::On);
    m.spec.ignition_ref = Some(SecretKeySelector {
        name: "ign".into(),
        key: "config".into(),
    });
    env.store.create_typed(m).await.unwrap();
    wait_for(
        &env.store,
        NS,
        "vm-1",
        |m: &Machine| {
            m.metadata
                .finalizers
                .contains(&keys::MACHINE_FINALIZER.to_string())
        },
        "finalizer",
    )
    .await;
    let secret = Secret {
        metadata: ObjectMeta::namespaced(NS, "ign"),
        string_data: [("config".to_string(), "{}".to_string())].into(),
        ..Secret::default()
    };
    env.store.create_typed(secret).await.unwrap();
    wait_for(&env.store, NS, "vm-1", is_running, "machine running").await;
    assert_eq!(
        env.mock.machines()[0].spec.clone().unwrap().ignition_data,
        b"{}"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_restarted_poollet_adopts_existing_runtime_machines() {
    let env = start().await;
    for name in ["vm-1", "vm-2"] {
        env.store
            .create_typed(new_machine(name, "x3-small", Power::On))
            .await
            .unwrap();
        wait_for(&env.store, NS, name, is_running, "machine running").await;
    }
    let (store, mock) = env.stop().await;
    let creates = mock.call_count(Method::CreateMachine);
    assert_eq!(creates, 2);

    let env = start_with(mock, store).await;
    env.create_and_wait(
        new_machine("vm-3", "x3-small", Power::On),
        is_running,
        "machine running",
    )
    .await;
    let mut names: Vec<String> = list_all(&env.mock)
        .await
        .iter()
        .map(|m| iri_label(m, keys::MACHINE_NAME_LABEL).to_string())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["vm-1", "vm-2", "vm-3"],
        "no duplicates after a restart"
    );
    assert_eq!(env.mock.call_count(Method::CreateMachine), 3);
    env.stop().await;
}

#[tokio::test]
async fn volume_changes_are_attached_and_detached_without_churn() {
    use irikit_api::compute::{EmptyDisk, LocalDisk, Volume};
    let mock = MockRuntime::builder().start_in_process().await.unwrap();
    let store = seeded_store().await;
    let reconciler = reconciler(&store, &mock);
    let key = ObjectRef::new(NS, "vm-1");
    let disk = |name: &str, device: &str, size: &str| Volume {
        name: name.into(),
        device: Some(device.into()),
        local_disk: Some(LocalDisk {
            size_limit: Some(size.parse().unwrap()),
            image: String::new(),
        }),
        ..Volume::default()
    };
    let mut m = new_machine("vm-1", "x3-small", Power::On);
    m.spec.volumes = vec![disk("root", "oda", "10Gi")];
    store.create_typed(m).await.unwrap();
    let settle = || settle(&reconciler, &store, &key);
    let m = settle().await;
    assert!(is_running(&m));
    assert_eq!(mock.call_count(Method::AttachVolume), 0, "no churn");
    assert_eq!(mock.call_count(Method::DetachVolume), 0, "no churn");
    let volumes = |m: &Machine| -> Vec<(String, String)> {
        m.status
            .volumes
            .iter()
            .map(|v| (v.name.clone(), v.state.clone()))
            .collect()
    };
    assert_eq!(volumes(&m), [("root".into(), "Attached".into())]);
    assert_eq!(
        condition_status(&m.status.conditions, "VolumesReady"),
        Some("True")
    );

    // Add a (deprecated) emptyDisk: attached once.
    let mut more = m;
    more.spec.volumes.push(Volume {
        name: "scratch".into(),
        device: Some("odb".into()),
        empty_disk: Some(EmptyDisk {
            size_limit: Some("1Gi".parse().unwrap()),
        }),
        ..Volume::default()
    });
    store.update_typed(more).await.unwrap();
    let m = settle().await;
    assert_eq!(mock.call_count(Method::AttachVolume), 1);
    let mut got = volumes(&m);
    got.sort();
    assert_eq!(
        got,
        [
            ("root".into(), "Attached".into()),
            ("scratch".into(), "Attached".into())
        ]
    );
    assert_eq!(m.status.observed_generation, m.metadata.generation);

    // Remove root, resize scratch: one detach for root, detach + attach for scratch.
    let mut fewer = m;
    fewer.spec.volumes = vec![disk("scratch", "odb", "2Gi")];
    store.update_typed(fewer).await.unwrap();
    let m = settle().await;
    assert_eq!(mock.call_count(Method::DetachVolume), 2);
    assert_eq!(mock.call_count(Method::AttachVolume), 2);
    assert_eq!(volumes(&m), [("scratch".into(), "Attached".into())]);
    let iri = &mock.machines()[0];
    let spec_volumes = &iri.spec.as_ref().unwrap().volumes;
    assert_eq!(spec_volumes.len(), 1);
    assert_eq!(
        spec_volumes[0].local_disk.clone().unwrap().size_bytes,
        2 << 30
    );
}

fn ephemeral_nic(name: &str, network: &str, ips: &[&str]) -> irikit_api::compute::NetworkInterface {
    use irikit_api::compute::{EphemeralNetworkInterface, IpSource, NetworkInterfaceTemplate};
    let mut template = NetworkInterfaceTemplate::default();
    template.spec.network_ref = LocalObjectReference::new(network);
    template.spec.ips = ips
        .iter()
        .map(|ip| IpSource {
            value: Some((*ip).to_string()),
            ephemeral: None,
        })
        .collect();
    irikit_api::compute::NetworkInterface {
        name: name.into(),
        network_interface_ref: None,
        ephemeral: Some(EphemeralNetworkInterface {
            network_interface_template: Some(template),
        }),
    }
}

fn iri_nics(mock: &MockRuntime) -> Vec<(String, String, Vec<String>)> {
    let mut nics: Vec<_> = mock.machines()[0]
        .spec
        .clone()
        .unwrap()
        .network_interfaces
        .into_iter()
        .map(|n| (n.name, n.network_id, n.ips))
        .collect();
    nics.sort();
    nics
}

fn nic_statuses(m: &Machine) -> Vec<(String, String, bool)> {
    m.status
        .network_interfaces
        .iter()
        .map(|n| (n.name.clone(), n.state.clone(), !n.handle.is_empty()))
        .collect()
}

#[tokio::test]
async fn nics_are_created_attached_detached_and_reported() {
    let mock = MockRuntime::builder().start_in_process().await.unwrap();
    let store = seeded_store().await;
    let reconciler = reconciler(&store, &mock);
    let key = ObjectRef::new(NS, "vm-1");
    let mut m = new_machine("vm-1", "x3-small", Power::On);
    m.spec.network_interfaces = vec![ephemeral_nic("eth0", "net-a", &["10.0.0.5"])];
    store.create_typed(m).await.unwrap();
    let settle = || settle(&reconciler, &store, &key);
    let m = settle().await;
    assert!(is_running(&m));
    assert_eq!(
        iri_nics(&mock),
        [("eth0".into(), "net-a".into(), vec!["10.0.0.5".into()])],
        "create sends the NIC with the network name as network_id"
    );
    let iri = &mock.machines()[0];
    let nic = &iri.spec.as_ref().unwrap().network_interfaces[0];
    assert!(nic.attributes[keys::RAW_NIC_LABELS_ATTRIBUTE].contains("vm-1-eth0"));
    assert!(nic.attributes[keys::RAW_NETWORK_LABELS_ATTRIBUTE].contains("net-a"));
    assert_eq!(
        iri.metadata.as_ref().unwrap().annotations[keys::NETWORK_INTERFACE_MAPPING_ANNOTATION],
        r#"{"eth0":{"name":"vm-1-eth0","uid":""}}"#
    );
    assert_eq!(nic_statuses(&m), [("eth0".into(), "Attached".into(), true)]);
    assert_eq!(
        condition_status(&m.status.conditions, "NetworkInterfacesReady"),
        Some("True")
    );
    assert_eq!(
        mock.call_count(Method::AttachNetworkInterface),
        0,
        "no churn"
    );
    assert_eq!(
        mock.call_count(Method::DetachNetworkInterface),
        0,
        "no churn"
    );

    // Add eth1 and change eth0's IP: eth1 attached, eth0 detached and re-attached.
    let mut more = m;
    more.spec.network_interfaces = vec![
        ephemeral_nic("eth0", "net-a", &["10.0.0.6"]),
        ephemeral_nic("eth1", "net-b", &[]),
    ];
    store.update_typed(more).await.unwrap();
    let m = settle().await;
    assert_eq!(mock.call_count(Method::AttachNetworkInterface), 2);
    assert_eq!(mock.call_count(Method::DetachNetworkInterface), 1);
    assert_eq!(
        iri_nics(&mock),
        [
            ("eth0".into(), "net-a".into(), vec!["10.0.0.6".into()]),
            ("eth1".into(), "net-b".into(), vec![]),
        ]
    );
    assert_eq!(
        mock.machines()[0].metadata.as_ref().unwrap().annotations
            [keys::NETWORK_INTERFACE_MAPPING_ANNOTATION],
        r#"{"eth0":{"name":"vm-1-eth0","uid":""},"eth1":{"name":"vm-1-eth1","uid":""}}"#
    );
    assert_eq!(m.status.observed_generation, m.metadata.generation);

    // Remove eth1 while the runtime already lost it (NotFound is ignored); add a NIC by
    // reference, which cannot resolve: it is reported Pending and never attached.
    mock.add_fault(FaultRule::new(
        Method::DetachNetworkInterface,
        Trigger::FirstN(1),
        Effect::error(tonic::Code::NotFound, "no such nic"),
    ));
    let mut fewer = m;
    fewer.spec.network_interfaces = vec![
        ephemeral_nic("eth0", "net-a", &["10.0.0.6"]),
        irikit_api::compute::NetworkInterface {
            name: "byref".into(),
            network_interface_ref: Some(LocalObjectReference::new("nic-1")),
            ephemeral: None,
        },
    ];
    store.update_typed(fewer).await.unwrap();
    // The NotFound answer is no reconcile error (settle unwraps every pass); since the fault
    // left eth1 in the runtime's spec, the next pass detaches it for real.
    let m = settle().await;
    assert_eq!(mock.call_count(Method::DetachNetworkInterface), 3);
    assert_eq!(mock.call_count(Method::AttachNetworkInterface), 2);
    assert_eq!(
        iri_nics(&mock),
        [("eth0".into(), "net-a".into(), vec!["10.0.0.6".into()])]
    );
    assert_eq!(
        nic_statuses(&m),
        [
            ("eth0".into(), "Attached".into(), true),
            ("byref".into(), "Pending".into(), false)
        ]
    );
    let cond = condition(&m.status.conditions, "NetworkInterfacesReady");
    assert_eq!(
        (cond.status.as_str(), cond.message.as_str()),
        ("False", "NetworkInterfaceNotReady: byref")
    );
}

#[tokio::test]
async fn a_nic_by_reference_waits_with_network_interface_not_ready() {
    let mock = MockRuntime::builder().start_in_process().await.unwrap();
    let store = seeded_store().await;
    let reconciler = reconciler(&store, &mock);
    let mut m = new_machine("vm-1", "x3-small", Power::On);
    m.spec.network_interfaces = vec![irikit_api::compute::NetworkInterface {
        name: "eth0".into(),
        network_interface_ref: Some(LocalObjectReference::new("nic-1")),
        ephemeral: None,
    }];
    store.create_typed(m).await.unwrap();
    for _ in 0..3 {
        reconciler
            .reconcile(&ObjectRef::new(NS, "vm-1"))
            .await
            .unwrap();
    }
    assert_eq!(mock.call_count(Method::CreateMachine), 0);
    let event: irikit_api::core::Event = store
        .get_typed(NS, "vm-1.networkinterfacenotready")
        .await
        .unwrap();
    assert_eq!(event.reason, "NetworkInterfaceNotReady");
    assert!(
        event.message.contains("\"nic-1\"") && event.message.contains("no NetworkInterface"),
        "{}",
        event.message
    );
}

/// The Events the event mapper recorded, as (involved name, reason, action).
async fn mapped_events(store: &Arc<dyn Store>) -> Vec<(String, String, String)> {
    let (events, _) = store
        .list_typed::<irikit_api::core::Event>(&irikit_api::ListOptions::all())
        .await
        .unwrap();
    let mut out: Vec<_> = events
        .into_iter()
        .filter(|e| {
            e.source.as_ref().map(|s| s.component.as_str()) == Some("machine-cluster-events")
        })
        .map(|e| (e.involved_object.name, e.reason, e.action))
        .collect();
    out.sort();
    out
}

/// Polls (with a deadline) until the mock has answered `n` more ListEvents calls.
async fn wait_list_events(mock: &MockRuntime, n: usize) {
    let target = mock.call_count(Method::MachineListEvents) + n;
    tokio::time::timeout(WAIT, async {
        while mock.call_count(Method::MachineListEvents) < target {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the event mapper keeps listing");
}

#[tokio::test]
async fn runtime_events_become_machine_events_once() {
    use iri_spec::event::v1alpha1 as event;
    // The mutant ignores the time window, so every ListEvents returns every event: recording
    // each once shows the dedupe across windows and across a poollet restart.
    let mock = MockRuntime::builder()
        .runtime_name("iri-mock")
        .mutant(iri_mock::Mutant::EventFilterIgnored)
        .start_in_process()
        .await
        .unwrap();
    let mut config = config();
    config.event_resync_period = Duration::from_millis(50);
    let env = start_with_config(mock, seeded_store().await, config.clone()).await;
    let created = env
        .store
        .create_typed(new_machine("vm-1", "x3-small", Power::On))
        .await
        .unwrap();
    wait_for(&env.store, NS, "vm-1", is_running, "machine running").await;
    env.mock.inject_machine_event(event::Event {
        spec: Some(event::EventSpec {
            involved_object_meta: Some(meta::ObjectMetadata {
                id: "x".into(),
                labels: [
                    (
                        keys::MACHINE_UID_LABEL.to_string(),
                        created.metadata.uid.clone(),
                    ),
                    (keys::MACHINE_NAMESPACE_LABEL.to_string(), NS.to_string()),
                    (keys::MACHINE_NAME_LABEL.to_string(), "vm-1".to_string()),
                ]
                .into(),
                ..meta::ObjectMetadata::default()
            }),
            reason: "GuestPanicked".into(),
            message: "kernel panic".into(),
            r#type: "Warning".into(),
            event_time: 1,
            action: String::new(),
        }),
    });
    wait_list_events(&env.mock, 3).await;
    let first = mapped_events(&env.store).await;
    assert!(
        first.contains(&("vm-1".into(), "GuestPanicked".into(), "Unknown".into())),
        "{first:?}"
    );
    assert!(
        first.len() >= 2,
        "the mock's own machine events too: {first:?}"
    );
    let panicked: Vec<_> = {
        let (events, _) = env
            .store
            .list_typed::<irikit_api::core::Event>(&irikit_api::ListOptions::all())
            .await
            .unwrap();
        events
            .into_iter()
            .filter(|e| e.reason == "GuestPanicked")
            .collect()
    };
    assert_eq!(panicked.len(), 1);
    let ev = &panicked[0];
    assert_eq!(
        (
            ev.type_.as_str(),
            ev.message.as_str(),
            ev.involved_object.uid.as_str()
        ),
        ("Warning", "kernel panic", created.metadata.uid.as_str())
    );
    assert_eq!(ev.involved_object.kind, "Machine");

    // A restarted poollet sees the same events again and records none twice.
    let (store, mock) = env.stop().await;
    let env = start_with_config(mock, store, config).await;
    wait_list_events(&env.mock, 3).await;
    assert_eq!(mapped_events(&env.store).await, first);
    env.stop().await;
}

#[tokio::test]
async fn the_pool_lease_is_taken_over_and_renewed_even_when_the_runtime_is_down() {
    use irikit_api::coordination::{Lease, LeaseSpec, MACHINE_POOL_LEASE_NAMESPACE};
    let store = seeded_store().await;
    store
        .create_typed(Lease {
            metadata: ObjectMeta::namespaced(MACHINE_POOL_LEASE_NAMESPACE, POOL),
            spec: LeaseSpec {
                holder_identity: Some(format!("{POOL}_an-earlier-process")),
                lease_duration_seconds: Some(40),
                acquire_time: Some("2020-01-01T00:00:00.000000Z".into()),
                renew_time: Some("2020-01-01T00:00:00.000000Z".into()),
                lease_transitions: Some(3),
            },
            ..Lease::default()
        })
        .await
        .unwrap();
    let mock = common::mock().await;
    let env = start_with(mock, store).await;
    let ours = |l: &Lease| {
        l.spec
            .holder_identity
            .as_deref()
            .is_some_and(|h| h.starts_with(&format!("{POOL}_")) && h != "pool-a_an-earlier-process")
    };
    let lease: Lease = wait_for(
        &env.store,
        MACHINE_POOL_LEASE_NAMESPACE,
        POOL,
        ours,
        "lease taken over",
    )
    .await;
    let holder = lease.spec.holder_identity.clone().unwrap();
    let uuid = holder.strip_prefix("pool-a_").unwrap();
    assert_eq!(uuid.len(), 36, "{holder}");
    assert_eq!(lease.spec.lease_transitions, Some(4));
    assert_eq!(lease.spec.lease_duration_seconds, Some(40));
    assert_ne!(
        lease.spec.acquire_time.as_deref(),
        Some("2020-01-01T00:00:00.000000Z")
    );

    // The runtime stops answering Status: the pool turns Ready=False, the lease keeps being
    // renewed by the same holder.
    env.mock.add_fault(FaultRule::new(
        Method::MachineStatus,
        Trigger::Always,
        Effect::error(tonic::Code::Unavailable, "down"),
    ));
    wait_pool_not_ready(&env.store).await;
    let before: Lease = env
        .store
        .get_typed(MACHINE_POOL_LEASE_NAMESPACE, POOL)
        .await
        .unwrap();
    let renewed: Lease = wait_for(
        &env.store,
        MACHINE_POOL_LEASE_NAMESPACE,
        POOL,
        |l: &Lease| l.spec.renew_time != before.spec.renew_time,
        "lease renewed while the runtime is down",
    )
    .await;
    assert_eq!(
        renewed.spec.holder_identity.as_deref(),
        Some(holder.as_str())
    );
    assert_eq!(renewed.spec.acquire_time, lease.spec.acquire_time);
    assert_eq!(renewed.spec.lease_transitions, Some(4));
    env.stop().await;
}

/// A create pass writes the finalizer and then the status: the watch events of both are the
/// reconciler's own (no second reconcile), a foreign write is not, and the first pass already
/// reports Running (the update pass runs right after CreateMachine).
#[tokio::test]
async fn own_finalizer_and_status_writes_are_recognised_and_a_foreign_one_is_not() {
    use futures::StreamExt;
    let mock = MockRuntime::builder().start_in_process().await.unwrap();
    let store = seeded_store().await;
    let reconciler = reconciler(&store, &mock);
    let key = ObjectRef::new(NS, "vm-1");
    let created = store
        .create_typed(new_machine("vm-1", "x3-small", Power::On))
        .await
        .unwrap();
    let from: u64 = created.metadata.resource_version.parse().unwrap();
    let mut watch = store.watch(Some(Kind::Machine), from).await.unwrap();
    reconciler.reconcile(&key).await.unwrap();
    let m: Machine = store.get_typed(NS, "vm-1").await.unwrap();
    assert_eq!(
        m.status.state, "Running",
        "one pass creates and reports Running"
    );
    assert_eq!(mock.call_count(Method::CreateMachine), 1);
    let mut own = Vec::new();
    for _ in 0..2 {
        let ev = tokio::time::timeout(WAIT, watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        own.push(reconciler.is_own_write(&ev.object));
    }
    assert_eq!(own, [true, true], "finalizer write, then status write");
    let mut labelled = m;
    labelled.metadata.labels.insert("team".into(), "a".into());
    store.update_typed(labelled).await.unwrap();
    let ev = tokio::time::timeout(WAIT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!reconciler.is_own_write(&ev.object), "a foreign write");
}
