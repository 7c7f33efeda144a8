//! The machinepoollet's storage volumes against iri-mock, after IronCore's machinepoollet
//! volume cases: a `volumeRef` volume waits until its Volume is claimed and Available, then
//! the IRI machine gets `device: oda` and the connection (driver, handle, attributes with
//! `rawVolumeLabels`, access and encryption secret data, effective size); a resize becomes
//! UpdateVolume; transient unreadiness detaches nothing; ephemeral volumes are created, owned,
//! claimed and deleted with the Machine (here with the volumepoollet on the same mock); claims
//! are released and foreign claims left alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use common::{WAIT, poll_until, secret, wait_any, wait_for, wait_gone};
use iri_mock::{Method, MockRuntime};
use iri_spec::{keys, machine::v1alpha1 as machine};
use irikit_api::{
    Kind, Resource, Store, StoreExt,
    compute::{self, EphemeralVolume, Machine, Power},
    core::Event,
    meta::{LocalObjectReference, ObjectMeta, condition_status},
    storage::{ClaimRef, Volume, VolumeAccess, VolumeClass, VolumeEncryption},
    store::memory::MemoryStore,
};
use poollet::{Config, MachinePoollet, VolumePoollet, VolumePoolletConfig};
use tokio_util::sync::CancellationToken;

const POOL: &str = "pool-a";
const NS: &str = "default";
const GI: i64 = 1 << 30;

struct Env {
    store: Arc<dyn Store>,
    mock: MockRuntime,
    token: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<poollet::Result<()>>>,
}

impl Env {
    async fn stop(self) {
        self.token.cancel();
        for task in self.tasks {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("poollet stops after cancel")
                .unwrap()
                .unwrap();
        }
    }
}

/// A machinepoollet (and, with `volumes`, a volumepoollet for `vpool`) on one mock.
async fn start(volumes: bool) -> Env {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    store
        .create_typed(common::machine_class("x3-small", "2", "8Gi"))
        .await
        .unwrap();
    store
        .create_typed(VolumeClass {
            metadata: ObjectMeta::named("fast"),
            capabilities: common::resources(&[("tps", "250Mi"), ("iops", "10000")]),
            ..VolumeClass::default()
        })
        .await
        .unwrap();
    let mock = common::mock().await;
    let token = CancellationToken::new();
    let mut config = Config::new(POOL, "ironcore://pool-a");
    config.pool.heartbeat_interval = Duration::from_millis(200);
    config.pool.status_timeout = Duration::from_millis(100);
    config.relist_period = Duration::from_millis(50);
    config.machine.converging_requeue = Duration::from_millis(20);
    config.machine.prerequisite_requeue = Duration::from_millis(100);
    let mut tasks = vec![tokio::spawn(
        MachinePoollet::new(store.clone(), mock.machine_channel(), config).run(token.clone()),
    )];
    if volumes {
        let mut config = VolumePoolletConfig::new("vpool", "ironcore://vpool");
        config.pool.status_interval = Duration::from_millis(200);
        config.pool.status_timeout = Duration::from_millis(100);
        config.relist_period = Duration::from_millis(50);
        config.volume.converging_requeue = Duration::from_millis(20);
        tasks.push(tokio::spawn(
            VolumePoollet::new(store.clone(), mock.volume_channel(), config).run(token.clone()),
        ));
    }
    Env {
        store,
        mock,
        token,
        tasks,
    }
}

fn new_machine(name: &str, volumes: Vec<compute::Volume>) -> Machine {
    let mut m = Machine {
        metadata: ObjectMeta::namespaced(NS, name),
        ..Machine::default()
    };
    m.spec.machine_class_ref = LocalObjectReference::new("x3-small");
    m.spec.machine_pool_ref = Some(LocalObjectReference::new(POOL));
    m.spec.power = Power::On;
    m.spec.volumes = volumes;
    m
}

fn volume_ref(name: &str, device: &str, volume: &str) -> compute::Volume {
    compute::Volume {
        name: name.into(),
        device: Some(device.into()),
        volume_ref: Some(LocalObjectReference::new(volume)),
        ..compute::Volume::default()
    }
}

fn storage_volume(name: &str, storage: &str) -> Volume {
    let mut v = Volume {
        metadata: ObjectMeta::namespaced(NS, name),
        ..Volume::default()
    };
    v.spec
        .resources
        .insert("storage".into(), storage.parse().unwrap());
    v
}

/// Makes `v` Available with access, as a volume runtime's poollet would.
async fn make_available(store: &Arc<dyn Store>, name: &str, storage: &str, secret: Option<&str>) {
    let mut v: Volume = store.get_typed(NS, name).await.unwrap();
    v.status.state = "Available".into();
    v.status.volume_id = format!("ceph://{name}");
    v.status.access = Some(VolumeAccess {
        secret_ref: secret.map(LocalObjectReference::new),
        driver: "ceph".into(),
        handle: format!("rbd/{name}"),
        volume_attributes: BTreeMap::from([("monitors".to_string(), "10.0.0.1".to_string())]),
    });
    v.status
        .resources
        .insert("storage".into(), storage.parse().unwrap());
    store.update_status(v.into_object()).await.unwrap();
}

fn iri_volumes(mock: &MockRuntime) -> Vec<machine::Volume> {
    mock.machines()
        .first()
        .and_then(|m| m.spec.clone())
        .map(|s| s.volumes)
        .unwrap_or_default()
}

fn is_running(m: &Machine) -> bool {
    m.status.state == "Running" && m.status.observed_generation == m.metadata.generation
}

#[tokio::test]
async fn a_volume_ref_waits_for_the_volume_then_attaches_its_connection_and_resizes_online() {
    let env = start(false).await;
    let mut data = storage_volume("data", "10Gi");
    data.spec.encryption = Some(VolumeEncryption {
        secret_ref: LocalObjectReference::new("enc"),
    });
    let data = env.store.create_typed(data).await.unwrap();
    let m = env
        .store
        .create_typed(new_machine("vm", vec![volume_ref("disk", "oda", "data")]))
        .await
        .unwrap();

    // Claimed at once, but not Available: no machine yet, a VolumeNotReady Event.
    let claimed: Volume = wait_for(
        &env.store,
        NS,
        "data",
        |v: &Volume| v.spec.claim_ref.is_some(),
        "volume claimed",
    )
    .await;
    assert_eq!(
        claimed.spec.claim_ref,
        Some(ClaimRef {
            name: "vm".into(),
            uid: m.metadata.uid.clone()
        })
    );
    wait_any(
        &env.store,
        |e: &Event| e.involved_object.name == "vm" && e.reason == "VolumeNotReady",
        "VolumeNotReady event",
    )
    .await;
    assert_eq!(env.mock.call_count(Method::CreateMachine), 0);

    env.store
        .create_typed(secret("access", "userKey", b"ceph-user"))
        .await
        .unwrap();
    env.store
        .create_typed(secret("enc", "encryptionKey", b"luks"))
        .await
        .unwrap();
    make_available(&env.store, "data", "10Gi", Some("access")).await;
    let m: Machine = wait_for(&env.store, NS, "vm", is_running, "machine running").await;

    let volumes = iri_volumes(&env.mock);
    assert_eq!(volumes.len(), 1);
    let volume = &volumes[0];
    assert_eq!(
        (volume.name.as_str(), volume.device.as_str()),
        ("disk", "oda")
    );
    assert!(volume.local_disk.is_none());
    let connection = volume.connection.clone().unwrap();
    assert_eq!(connection.driver, "ceph");
    assert_eq!(connection.handle, "rbd/data");
    assert_eq!(
        connection.attributes.get("monitors").map(String::as_str),
        Some("10.0.0.1")
    );
    let raw: BTreeMap<String, String> =
        serde_json::from_str(&connection.attributes[keys::RAW_VOLUME_LABELS_ATTRIBUTE]).unwrap();
    assert_eq!(
        raw,
        BTreeMap::from([
            (keys::VOLUME_NAME_LABEL.to_string(), "data".to_string()),
            (keys::VOLUME_NAMESPACE_LABEL.to_string(), NS.to_string()),
            (
                keys::VOLUME_UID_LABEL.to_string(),
                data.metadata.uid.clone()
            ),
        ])
    );
    assert_eq!(
        common::secret_bytes(&connection.secret_data, "userKey"),
        Some(&b"ceph-user"[..])
    );
    assert_eq!(
        common::secret_bytes(&connection.encryption_data, "encryptionKey"),
        Some(&b"luks"[..])
    );
    assert_eq!(connection.effective_storage_bytes, 10 * GI);
    let status = &m.status.volumes;
    assert_eq!(status.len(), 1);
    assert_eq!(
        status[0].volume_ref,
        Some(LocalObjectReference::new("data"))
    );

    // The Volume grows: UpdateVolume with the new size, no detach.
    make_available(&env.store, "data", "20Gi", Some("access")).await;
    poll_until(
        || {
            iri_volumes(&env.mock)
                .first()
                .and_then(|v| v.connection.clone())
                .is_some_and(|c| c.effective_storage_bytes == 20 * GI)
        },
        "online resize",
    )
    .await;
    assert_eq!(env.mock.call_count(Method::UpdateVolume), 1);
    assert_eq!(env.mock.call_count(Method::DetachVolume), 0);

    // The access Secret goes away for a while: nothing is detached (§8.8).
    let seen: Event = env.store.get_typed(NS, "vm.volumenotready").await.unwrap();
    env.store
        .delete(Kind::Secret, NS, "access", None)
        .await
        .unwrap();
    wait_any(
        &env.store,
        |e: &Event| {
            e.involved_object.name == "vm"
                && e.reason == "VolumeNotReady"
                && e.count > seen.count
                && e.message.contains("access secret")
        },
        "VolumeNotReady again",
    )
    .await;
    assert_eq!(env.mock.call_count(Method::DetachVolume), 0);
    assert_eq!(iri_volumes(&env.mock).len(), 1);
    env.stop().await;
}

#[tokio::test]
async fn claims_are_released_and_foreign_claims_left_alone() {
    let env = start(false).await;
    env.store
        .create_typed(storage_volume("mine", "1Gi"))
        .await
        .unwrap();
    // `theirs` is claimed by a Machine of another pool; `stale` by a Machine that is gone.
    let mut other = new_machine("other", Vec::new());
    other.spec.machine_pool_ref = Some(LocalObjectReference::new("elsewhere"));
    let other = env.store.create_typed(other).await.unwrap();
    let mut theirs = storage_volume("theirs", "1Gi");
    theirs.spec.claim_ref = Some(ClaimRef {
        name: "other".into(),
        uid: other.metadata.uid.clone(),
    });
    env.store.create_typed(theirs).await.unwrap();
    let mut stale = storage_volume("stale", "1Gi");
    stale.spec.claim_ref = Some(ClaimRef {
        name: "ghost".into(),
        uid: "uid-ghost".into(),
    });
    env.store.create_typed(stale).await.unwrap();
    env.store
        .create_typed(new_machine(
            "vm",
            vec![
                volume_ref("a", "oda", "mine"),
                volume_ref("b", "odb", "theirs"),
                volume_ref("c", "odc", "stale"),
            ],
        ))
        .await
        .unwrap();
    wait_claim(&env.store, "mine", Some("vm"), "mine claimed").await;
    make_available(&env.store, "mine", "1Gi", None).await;
    let event = wait_any(
        &env.store,
        |e: &Event| {
            e.involved_object.name == "vm"
                && e.reason == "VolumeNotReady"
                && e.message.contains("theirs")
        },
        "foreign claim reported",
    )
    .await;
    assert!(event.message.contains("\"other\""), "{}", event.message);
    let theirs: Volume = env.store.get_typed(NS, "theirs").await.unwrap();
    assert_eq!(theirs.spec.claim_ref.unwrap().name, "other", "left alone");
    wait_claim(
        &env.store,
        "stale",
        Some("vm"),
        "a stale claim is taken over",
    )
    .await;

    // The machine drops `a`: its claim is released.
    let mut m: Machine = env.store.get_typed(NS, "vm").await.unwrap();
    m.spec.volumes.retain(|v| v.name != "a");
    env.store.update_typed(m).await.unwrap();
    wait_claim(&env.store, "mine", None, "mine released").await;
    assert_eq!(env.mock.call_count(Method::CreateMachine), 0);
    env.stop().await;
}

#[tokio::test]
async fn ephemeral_volumes_are_created_claimed_attached_and_deleted_with_the_machine() {
    let env = start(true).await;
    let template = serde_json::json!({
        "metadata": {"labels": {"app": "db"}},
        "spec": {
            "volumeClassRef": {"name": "fast"},
            "volumePoolRef": {"name": "vpool"},
            "resources": {"storage": "2Gi"}
        }
    });
    env.store
        .create_typed(new_machine(
            "vm",
            vec![compute::Volume {
                name: "scratch".into(),
                device: Some("oda".into()),
                ephemeral: Some(EphemeralVolume {
                    volume_template: Some(template),
                }),
                ..compute::Volume::default()
            }],
        ))
        .await
        .unwrap();
    let m: Machine = wait_for(&env.store, NS, "vm", is_running, "machine running").await;
    assert_eq!(
        condition_status(&m.status.conditions, "VolumesReady"),
        Some("True")
    );
    let v: Volume = env.store.get_typed(NS, "vm-scratch").await.unwrap();
    assert_eq!(v.metadata.labels.get("app").map(String::as_str), Some("db"));
    let owner = &v.metadata.owner_references[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Machine", m.metadata.uid.as_str(), Some(true))
    );
    assert_eq!(v.spec.claim_ref.as_ref().unwrap().uid, m.metadata.uid);
    let volumes = iri_volumes(&env.mock);
    let connection = volumes[0].connection.clone().unwrap();
    assert_eq!(connection.driver, "iri-mock");
    assert_eq!(connection.handle, v.status.access.clone().unwrap().handle);
    assert_eq!(connection.effective_storage_bytes, 2 * GI);

    env.store
        .delete(Kind::Machine, NS, "vm", None)
        .await
        .unwrap();
    wait_gone(&env.store, Kind::Machine, NS, "vm").await;
    wait_gone(&env.store, Kind::Volume, NS, "vm-scratch").await;
    poll_until(|| env.mock.volumes().is_empty(), "runtime volume deleted").await;
    env.stop().await;
}

/// Waits until volume `name` is claimed by `claimer` (`None`: until its claim is released).
async fn wait_claim(
    store: &Arc<dyn Store>,
    name: &str,
    claimer: Option<&str>,
    what: &str,
) -> Volume {
    let claimed_by = |v: &Volume| v.spec.claim_ref.as_ref().map(|c| c.name.as_str()) == claimer;
    wait_for(store, NS, name, claimed_by, what).await
}
