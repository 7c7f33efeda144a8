//! The volumepoollet against iri-mock (in process) and the memory store (one case also on
//! etcd), after IronCore's volumepoollet suite: pool announcement with classes, capacity and
//! allocatable; create with class mapping, image and snapshot sources and encryption; expand;
//! status with access and the access Secret; snapshots only on the right pool; delete through
//! the finalizer; orphan GC; duplicates; runtime events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use base64::Engine;
use common::{Env, poll_until, secret, wait_any, wait_for, wait_gone};
use iri_mock::{Method, MockRuntime};
use iri_spec::{
    keys,
    meta::v1alpha1 as meta,
    volume::v1alpha1::{self as volume, volume_runtime_client::VolumeRuntimeClient},
};
use irikit_api::{
    Kind, Store, StoreExt,
    core::{Event, Secret},
    meta::{LocalObjectReference, ObjectMeta},
    storage::{
        OsImage, Volume, VolumeClass, VolumeDataSource, VolumeEncryption, VolumePool,
        VolumeSnapshot,
    },
    store::memory::MemoryStore,
};
use poollet::{
    ObjectRef, Reconciler, VolumePoollet, VolumePoolletConfig,
    pool::VolumeRuntimeView,
    volume::{VolumeConfig, VolumeReconciler, access_secret_name},
};

const POOL: &str = "vpool-a";
const NS: &str = "default";
const MI: i64 = 1 << 20;
const GI: i64 = 1 << 30;

fn class(name: &str, tps: i64, iops: i64) -> VolumeClass {
    VolumeClass {
        metadata: ObjectMeta::named(name),
        capabilities: common::resources(&[("tps", &tps.to_string()), ("iops", &iops.to_string())]),
        ..VolumeClass::default()
    }
}

/// Mock classes: `fast` (250 MiB/s, 10000) and `slow` (50 MiB/s, 500), 1 TiB each.
async fn seed(store: Arc<dyn Store>) -> Arc<dyn Store> {
    store
        .create_typed(class("fast", 250 * MI, 10_000))
        .await
        .unwrap();
    // Another name with slow's capabilities maps to the runtime's `slow`.
    store
        .create_typed(class("economy", 50 * MI, 500))
        .await
        .unwrap();
    // No runtime class has these.
    store.create_typed(class("exotic", 1, 1)).await.unwrap();
    store
}

fn config(pool: &str) -> VolumePoolletConfig {
    let mut config = VolumePoolletConfig::new(pool, format!("ironcore://{pool}"));
    config.pool.topology_region = "eu-1".into();
    config.pool.topology_zone = "eu-1a".into();
    config.pool.status_interval = Duration::from_millis(200);
    config.pool.status_timeout = Duration::from_millis(100);
    config.relist_period = Duration::from_millis(50);
    config.event_interval = Duration::from_millis(100);
    config.volume.converging_requeue = Duration::from_millis(20);
    config.volume.prerequisite_requeue = Duration::from_millis(100);
    config
}

async fn mock() -> MockRuntime {
    common::mock().await
}

fn start_on(store: Arc<dyn Store>, mock: MockRuntime, pool: &str) -> Env {
    start_with(store, mock, config(pool))
}

fn start_with(store: Arc<dyn Store>, mock: MockRuntime, config: VolumePoolletConfig) -> Env {
    let poollet = VolumePoollet::new(store.clone(), mock.volume_channel(), config);
    Env::spawn(store, mock, |token| poollet.run(token))
}

async fn start() -> Env {
    let store = seed(Arc::new(MemoryStore::new())).await;
    start_on(store, mock().await, POOL)
}

/// Creates the Secret `key` and the Volume `name` (class `fast`, `storage`) encrypted with it.
async fn create_encrypted(store: &Arc<dyn Store>, name: &str, storage: &str) {
    store
        .create_typed(secret("key", "encryptionKey", b"k1"))
        .await
        .unwrap();
    let mut source = new_volume(name, "fast", storage);
    source.spec.encryption = Some(VolumeEncryption {
        secret_ref: LocalObjectReference::new("key"),
    });
    store.create_typed(source).await.unwrap();
}

fn new_volume(name: &str, class: &str, storage: &str) -> Volume {
    let mut v = Volume {
        metadata: ObjectMeta::namespaced(NS, name),
        ..Volume::default()
    };
    v.spec.volume_class_ref = Some(LocalObjectReference::new(class));
    v.spec.volume_pool_ref = Some(LocalObjectReference::new(POOL));
    v.spec
        .resources
        .insert("storage".into(), storage.parse().unwrap());
    v
}

fn is_available(v: &Volume) -> bool {
    v.status.state == "Available" && v.status.access.is_some()
}

fn iri_label<'a>(md: Option<&'a meta::ObjectMetadata>, key: &str) -> &'a str {
    md.and_then(|md| md.labels.get(key))
        .map_or("", String::as_str)
}

fn iri_volume_of(mock: &MockRuntime, uid: &str) -> Option<volume::Volume> {
    mock.volumes()
        .into_iter()
        .find(|v| iri_label(v.metadata.as_ref(), keys::VOLUMEPOOLLET_VOLUME_UID_LABEL) == uid)
}

fn shown(list: &irikit_api::ResourceList) -> Vec<String> {
    list.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

async fn event_with_reason(store: &Arc<dyn Store>, name: &str, reason: &str) -> Event {
    wait_any(
        store,
        |e: &Event| e.involved_object.name == name && e.reason == reason,
        reason,
    )
    .await
}

#[tokio::test]
async fn pool_is_announced_with_classes_capacity_and_allocatable() {
    let env = start().await;
    let pool: VolumePool = wait_for(
        &env.store,
        "",
        POOL,
        |p: &VolumePool| !p.status.capacity.is_empty(),
        "pool with capacity",
    )
    .await;
    assert_eq!(pool.spec.provider_id, "ironcore://vpool-a");
    assert_eq!(
        pool.metadata
            .labels
            .get(keys::TOPOLOGY_REGION_LABEL)
            .map(String::as_str),
        Some("eu-1")
    );
    assert_eq!(
        pool.metadata
            .labels
            .get(keys::TOPOLOGY_ZONE_LABEL)
            .map(String::as_str),
        Some("eu-1a")
    );
    assert_eq!(pool.status.state, "Available");
    let mut classes: Vec<&str> = pool
        .status
        .available_volume_classes
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    classes.sort_unstable();
    assert_eq!(classes, ["economy", "fast"]);
    assert_eq!(
        shown(&pool.status.capacity),
        ["class/volume.economy=1Ti", "class/volume.fast=1Ti"]
    );
    assert_eq!(
        shown(&pool.status.allocatable),
        shown(&pool.status.capacity)
    );

    // A bound volume reduces allocatable of its class by its requested bytes (we watch
    // Volumes; IronCore does not).
    env.store
        .create_typed(new_volume("v1", "fast", "24Gi"))
        .await
        .unwrap();
    let pool: VolumePool = wait_for(
        &env.store,
        "",
        POOL,
        |p: &VolumePool| {
            shown(&p.status.allocatable).contains(&"class/volume.fast=1000Gi".to_string())
        },
        "allocatable reduced",
    )
    .await;
    assert_eq!(
        shown(&pool.status.allocatable),
        ["class/volume.economy=1Ti", "class/volume.fast=1000Gi"]
    );
    env.stop().await;
}

/// A CreateVolume that copies longer than the other calls' timeout (an image copy) is
/// waited for under its own, longer timeout: one call, one copy. With one timeout for every
/// call the poollet abandoned the copy and started it over on every retry.
#[tokio::test]
async fn a_slow_create_is_waited_for_not_abandoned_and_restarted() {
    let store = seed(Arc::new(MemoryStore::new())).await;
    let mock = mock().await;
    mock.add_fault(iri_mock::FaultRule::new(
        Method::CreateVolume,
        iri_mock::Trigger::Always,
        iri_mock::Effect::delay(Duration::from_millis(1500)),
    ));
    let mut cfg = config(POOL);
    cfg.volume.rpc_timeout = Duration::from_millis(300);
    cfg.volume.create_timeout = Duration::from_secs(10);
    let env = start_with(store, mock, cfg);
    env.create_and_wait(
        new_volume("slow", "economy", "1Gi"),
        is_available,
        "volume available",
    )
    .await;
    assert_eq!(
        env.mock.calls_to(Method::CreateVolume).len(),
        1,
        "one CreateVolume, waited for"
    );
    env.stop().await;
}

#[tokio::test]
async fn volume_is_created_through_the_class_mapping_with_an_image_and_becomes_available() {
    let env = start().await;
    let mut v = new_volume("root", "economy", "10Gi");
    v.spec.data_source = Some(VolumeDataSource {
        volume_snapshot_ref: None,
        os_image: Some(OsImage {
            image: "ghcr.io/ironcore-dev/os-images/gardenlinux:latest".into(),
            architecture: "amd64".into(),
        }),
    });
    let created = env.store.create_typed(v).await.unwrap();
    let v: Volume = wait_for(&env.store, NS, "root", is_available, "volume available").await;
    assert!(
        v.metadata
            .finalizers
            .contains(&keys::VOLUME_FINALIZER.to_string())
    );
    let iri = iri_volume_of(&env.mock, &created.metadata.uid).expect("runtime volume");
    let md = iri.metadata.clone().unwrap();
    assert_eq!(
        iri_label(Some(&md), keys::VOLUMEPOOLLET_VOLUME_NAMESPACE_LABEL),
        NS
    );
    assert_eq!(
        iri_label(Some(&md), keys::VOLUMEPOOLLET_VOLUME_NAME_LABEL),
        "root"
    );
    assert!(
        md.annotations.is_empty(),
        "IRI volume annotations are empty"
    );
    let spec = iri.spec.clone().unwrap();
    assert_eq!(spec.class, "slow", "the runtime class the mapping found");
    assert_eq!(spec.resources.unwrap().storage_bytes, 10 * GI);
    let image = spec.volume_data_source.unwrap().image_data_source.unwrap();
    assert_eq!(
        (image.image.as_str(), image.architecture.as_str()),
        ("ghcr.io/ironcore-dev/os-images/gardenlinux:latest", "amd64")
    );
    assert!(spec.encryption.is_none());

    assert_eq!(v.status.volume_id, format!("iri-mock://{}", md.id));
    assert!(v.status.last_state_transition_time.is_some());
    assert_eq!(shown(&v.status.resources), ["storage=10Gi"]);
    let access = v.status.access.clone().unwrap();
    assert_eq!(access.driver, "iri-mock");
    assert_eq!(access.handle, format!("iri-mock-volume-{}", md.id));
    assert_eq!(
        access.volume_attributes.get("volume-id"),
        Some(&md.id),
        "attributes are copied"
    );
    assert!(
        access.secret_ref.is_none(),
        "no secret data, no access Secret"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_volume_waits_for_its_class_and_its_encryption_secret() {
    let env = start().await;
    let mut v = new_volume("enc", "later", "1Gi");
    v.spec.encryption = Some(VolumeEncryption {
        secret_ref: LocalObjectReference::new("enc-key"),
    });
    env.store.create_typed(v).await.unwrap();
    event_with_reason(&env.store, "enc", "VolumeClassNotReady").await;
    env.store
        .create_typed(class("later", 250 * MI, 10_000))
        .await
        .unwrap();
    event_with_reason(&env.store, "enc", "VolumeEncryptionSecretNotReady").await;
    assert!(env.mock.volumes().is_empty(), "nothing created yet");
    assert_eq!(env.mock.call_count(Method::CreateVolume), 0);

    env.store
        .create_typed(secret("enc-key", "encryptionKey", b"s3cr3t"))
        .await
        .unwrap();
    let v: Volume = wait_for(&env.store, NS, "enc", is_available, "encrypted volume").await;
    let iri = iri_volume_of(&env.mock, &v.metadata.uid).unwrap();
    let spec = iri.spec.unwrap();
    assert_eq!(
        spec.class, "fast",
        "same capabilities as fast, no same-name class"
    );
    let encryption = spec.encryption.expect("encryption sent");
    assert_eq!(
        common::secret_bytes(&encryption.secret_data, "encryptionKey"),
        Some(&b"s3cr3t"[..])
    );
    env.stop().await;
}

#[tokio::test]
async fn snapshots_are_taken_and_restored_with_the_snapshot_id_and_inherited_encryption() {
    let env = start().await;
    create_encrypted(&env.store, "data", "4Gi").await;

    // A restore whose snapshot does not exist yet waits.
    let mut restored = new_volume("restored", "fast", "4Gi");
    restored.spec.data_source = Some(VolumeDataSource {
        volume_snapshot_ref: Some(LocalObjectReference::new("snap")),
        os_image: None,
    });
    env.store.create_typed(restored).await.unwrap();
    event_with_reason(&env.store, "restored", "VolumeSnapshotNotReady").await;

    let source: Volume = wait_for(&env.store, NS, "data", is_available, "source").await;
    env.store
        .create_typed(snapshot_of("snap", "data"))
        .await
        .unwrap();
    let snapshot: VolumeSnapshot = wait_for(
        &env.store,
        NS,
        "snap",
        |s: &VolumeSnapshot| s.status.state == "Ready",
        "snapshot ready",
    )
    .await;
    assert!(
        snapshot
            .metadata
            .finalizers
            .contains(&keys::VOLUME_SNAPSHOT_FINALIZER.to_string())
    );
    let iri_snapshots = env.mock.volume_snapshots();
    assert_eq!(iri_snapshots.len(), 1);
    let iri_snapshot = &iri_snapshots[0];
    let snapshot_md = iri_snapshot.metadata.clone().unwrap();
    let source_id = source.status.volume_id.strip_prefix("iri-mock://").unwrap();
    assert_eq!(iri_snapshot.spec.clone().unwrap().volume_id, source_id);
    assert_eq!(
        iri_label(Some(&snapshot_md), keys::VOLUME_SNAPSHOT_UID_LABEL),
        snapshot.metadata.uid
    );
    assert_eq!(
        iri_label(Some(&snapshot_md), keys::VOLUME_SNAPSHOT_NAME_LABEL),
        "snap"
    );
    assert_eq!(
        snapshot.status.snapshot_id,
        format!("iri-mock://{}", snapshot_md.id)
    );
    assert_eq!(
        snapshot.status.size.map(|q| q.to_string()),
        Some("4Gi".into())
    );

    let restored: Volume = wait_for(&env.store, NS, "restored", is_available, "restored").await;
    let spec = iri_volume_of(&env.mock, &restored.metadata.uid)
        .unwrap()
        .spec
        .unwrap();
    let from = spec
        .volume_data_source
        .unwrap()
        .snapshot_data_source
        .unwrap();
    assert_eq!(
        from.snapshot_id, snapshot_md.id,
        "the id part of snapshotID, not the object name (§8.3)"
    );
    assert_eq!(
        common::secret_bytes(&spec.encryption.unwrap().secret_data, "encryptionKey"),
        Some(&b"k1"[..]),
        "a restore inherits the source's encryption"
    );

    // Deleting the snapshot goes through its finalizer.
    env.store
        .delete(Kind::VolumeSnapshot, NS, "snap", None)
        .await
        .unwrap();
    wait_gone(&env.store, Kind::VolumeSnapshot, NS, "snap").await;
    assert!(env.mock.volume_snapshots().is_empty());
    env.stop().await;
}

fn snapshot_of(name: &str, volume: &str) -> VolumeSnapshot {
    VolumeSnapshot {
        metadata: ObjectMeta::namespaced(NS, name),
        spec: irikit_api::storage::VolumeSnapshotSpec {
            volume_ref: LocalObjectReference::new(volume),
        },
        ..VolumeSnapshot::default()
    }
}

#[tokio::test]
async fn a_restore_of_an_encrypted_snapshot_must_not_set_its_own_encryption() {
    let env = start().await;
    create_encrypted(&env.store, "src", "1Gi").await;
    wait_for(&env.store, NS, "src", is_available, "source").await;
    env.store
        .create_typed(snapshot_of("snap", "src"))
        .await
        .unwrap();
    wait_for(
        &env.store,
        NS,
        "snap",
        |s: &VolumeSnapshot| s.status.state == "Ready",
        "snapshot ready",
    )
    .await;
    let mut restored = new_volume("copy", "fast", "1Gi");
    restored.spec.data_source = Some(VolumeDataSource {
        volume_snapshot_ref: Some(LocalObjectReference::new("snap")),
        os_image: None,
    });
    restored.spec.encryption = Some(VolumeEncryption {
        secret_ref: LocalObjectReference::new("key"),
    });
    let restored = env.store.create_typed(restored).await.unwrap();
    event_with_reason(&env.store, "copy", "VolumeEncryptionConflict").await;
    assert!(iri_volume_of(&env.mock, &restored.metadata.uid).is_none());
    env.stop().await;
}

#[tokio::test]
async fn snapshots_are_handled_only_by_the_pool_of_their_source_volume() {
    let store = seed(Arc::new(MemoryStore::new())).await;
    let a = start_on(store.clone(), mock().await, POOL);
    let b = start_on(store.clone(), mock().await, "vpool-b");
    store
        .create_typed(new_volume("data", "fast", "1Gi"))
        .await
        .unwrap();
    wait_for(&store, NS, "data", is_available, "source").await;
    store
        .create_typed(snapshot_of("snap", "data"))
        .await
        .unwrap();
    wait_for(
        &store,
        NS,
        "snap",
        |s: &VolumeSnapshot| s.status.state == "Ready",
        "snapshot ready",
    )
    .await;
    assert_eq!(a.mock.volume_snapshots().len(), 1);
    assert!(b.mock.volume_snapshots().is_empty());
    assert_eq!(
        b.mock.call_count(Method::CreateVolumeSnapshot),
        0,
        "the other pool never tries (§8.19)"
    );
    assert!(b.mock.volumes().is_empty());
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn volumes_grow_through_expand_and_a_shrink_is_an_event() {
    let env = start().await;
    let v: Volume = env
        .create_and_wait(
            new_volume("grow", "fast", "10Gi"),
            is_available,
            "available",
        )
        .await;
    let mut bigger = v.clone();
    bigger
        .spec
        .resources
        .insert("storage".into(), "20Gi".parse().unwrap());
    env.store.update_typed(bigger).await.unwrap();
    let v: Volume = wait_for(
        &env.store,
        NS,
        "grow",
        |v: &Volume| shown(&v.status.resources) == ["storage=20Gi"],
        "expanded",
    )
    .await;
    let iri = iri_volume_of(&env.mock, &v.metadata.uid).unwrap();
    assert_eq!(iri.spec.unwrap().resources.unwrap().storage_bytes, 20 * GI);
    let expands = env.mock.calls_to(Method::ExpandVolume);
    assert_eq!(expands.len(), 1);
    let request = expands[0].request::<volume::ExpandVolumeRequest>().unwrap();
    assert_eq!(request.resources.unwrap().storage_bytes, 20 * GI);

    let mut smaller = v;
    smaller
        .spec
        .resources
        .insert("storage".into(), "5Gi".parse().unwrap());
    env.store.update_typed(smaller).await.unwrap();
    let event = event_with_reason(&env.store, "grow", "VolumeResizeNotSupported").await;
    assert_eq!(event.type_, "Warning");
    assert_eq!(
        env.mock.call_count(Method::ExpandVolume),
        1,
        "a shrink is never sent"
    );
    env.stop().await;
}

#[tokio::test]
async fn access_secret_data_goes_into_an_owned_secret_and_is_cleaned_up() {
    let env = start().await;
    let created = env
        .store
        .create_typed(new_volume("ceph", "fast", "1Gi"))
        .await
        .unwrap();
    let v: Volume = wait_for(&env.store, NS, "ceph", is_available, "available").await;
    let id = v
        .status
        .volume_id
        .strip_prefix("iri-mock://")
        .unwrap()
        .to_string();
    assert!(env.mock.modify_volume(&id, |iri| {
        let access = iri.status.as_mut().unwrap().access.as_mut().unwrap();
        access
            .secret_data
            .insert("userKey".into(), b"ceph-key".to_vec());
    }));
    let handle = v.status.access.clone().unwrap().handle;
    let name = access_secret_name("ceph", &handle);
    assert_eq!(name.len(), 63);
    let v: Volume = wait_for(
        &env.store,
        NS,
        "ceph",
        |v: &Volume| {
            v.status
                .access
                .as_ref()
                .is_some_and(|a| a.secret_ref.is_some())
        },
        "secretRef set",
    )
    .await;
    assert_eq!(
        v.status.access.unwrap().secret_ref,
        Some(LocalObjectReference::new(name.clone()))
    );
    let secret: Secret = env.store.get_typed(NS, &name).await.unwrap();
    assert_eq!(
        secret
            .metadata
            .labels
            .get(keys::VOLUMEPOOLLET_VOLUME_UID_LABEL),
        Some(&created.metadata.uid)
    );
    let owner = &secret.metadata.owner_references[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Volume", "ceph", created.metadata.uid.as_str())
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(
        secret.data.get("userKey").map(String::as_str),
        Some(
            base64::engine::general_purpose::STANDARD
                .encode(b"ceph-key")
                .as_str()
        )
    );

    // No more secret data: the Secret goes. (An attribute changes as well: the relist wakes
    // reconciles on differences from its last list, and that list may predate the secret
    // data, A-B-A.)
    env.mock.modify_volume(&id, |iri| {
        let access = iri.status.as_mut().unwrap().access.as_mut().unwrap();
        access.secret_data.clear();
        access.attributes.insert("rotated".into(), "1".into());
    });
    wait_gone(&env.store, Kind::Secret, NS, &name).await;
    wait_for(
        &env.store,
        NS,
        "ceph",
        |v: &Volume| {
            v.status
                .access
                .as_ref()
                .is_some_and(|a| a.secret_ref.is_none())
        },
        "secretRef cleared",
    )
    .await;
    env.stop().await;
}

#[tokio::test]
async fn delete_goes_through_the_finalizer_and_removes_the_access_secret() {
    let env = start().await;
    let v: Volume = env
        .create_and_wait(new_volume("gone", "fast", "1Gi"), is_available, "available")
        .await;
    let id = v
        .status
        .volume_id
        .strip_prefix("iri-mock://")
        .unwrap()
        .to_string();
    env.mock.modify_volume(&id, |iri| {
        let access = iri.status.as_mut().unwrap().access.as_mut().unwrap();
        access.secret_data.insert("k".into(), b"v".to_vec());
    });
    let name = access_secret_name("gone", &v.status.access.unwrap().handle);
    wait_any(
        &env.store,
        |s: &Secret| s.metadata.name == name,
        "access secret",
    )
    .await;

    env.store
        .delete(Kind::Volume, NS, "gone", None)
        .await
        .unwrap();
    wait_gone(&env.store, Kind::Volume, NS, "gone").await;
    assert!(
        env.mock.volumes().is_empty(),
        "the runtime volume is deleted"
    );
    assert!(env.store.get(Kind::Secret, NS, &name).await.is_err());
    env.stop().await;
}

fn iri_volume(uid: &str, name: &str) -> volume::Volume {
    volume::Volume {
        metadata: Some(meta::ObjectMetadata {
            labels: [
                (keys::VOLUMEPOOLLET_VOLUME_UID_LABEL, uid),
                (keys::VOLUMEPOOLLET_VOLUME_NAMESPACE_LABEL, NS),
                (keys::VOLUMEPOOLLET_VOLUME_NAME_LABEL, name),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..meta::ObjectMetadata::default()
        }),
        spec: Some(volume::VolumeSpec {
            class: "fast".into(),
            resources: Some(volume::VolumeResources { storage_bytes: GI }),
            ..volume::VolumeSpec::default()
        }),
        status: None,
    }
}

fn reconciler(store: &Arc<dyn Store>, mock: &MockRuntime) -> VolumeReconciler {
    let mut config = VolumeConfig::new(POOL);
    config.converging_requeue = Duration::from_millis(20);
    VolumeReconciler::new(
        store.clone(),
        VolumeRuntimeClient::new(mock.volume_channel()),
        "iri-mock",
        VolumeRuntimeView::default(),
        config,
    )
}

#[tokio::test]
async fn orphans_are_collected_when_their_volume_is_gone_or_replaced() {
    let store = seed(Arc::new(MemoryStore::new())).await;
    let mock = mock().await;
    let gone = mock.insert_volume(iri_volume("uid-gone", "old"));
    let current = store
        .create_typed(new_volume("kept", "fast", "1Gi"))
        .await
        .unwrap();
    let replaced = mock.insert_volume(iri_volume("uid-before", "kept"));
    let r = reconciler(&store, &mock);
    r.reconcile(&ObjectRef::new(NS, "old")).await.unwrap();
    r.reconcile(&ObjectRef::new(NS, "kept")).await.unwrap();
    let ids: Vec<String> = mock
        .volumes()
        .into_iter()
        .filter(|v| v.metadata.as_ref().unwrap().deleted_at == 0)
        .map(|v| v.metadata.unwrap().id)
        .collect();
    assert!(!ids.contains(&gone), "volume of a gone Volume deleted");
    assert!(
        !ids.contains(&replaced),
        "volume of a re-created Volume deleted"
    );
    assert!(
        iri_volume_of(&mock, &current.metadata.uid).is_some(),
        "the current Volume got its runtime volume"
    );
}

#[tokio::test]
async fn orphans_are_found_by_the_runtime_relist_and_duplicates_reduced() {
    let store = seed(Arc::new(MemoryStore::new())).await;
    let mock = mock().await;
    let orphan = mock.insert_volume(iri_volume("uid-x", "never-existed"));
    let env = start_on(store, mock, POOL);
    poll_until(
        || {
            env.mock
                .volume(&orphan)
                .is_none_or(|v| v.metadata.unwrap().deleted_at != 0)
        },
        "orphan deleted by the relist",
    )
    .await;

    // Two runtime volumes for one uid: one is kept, the other deleted.
    let v = env
        .store
        .create_typed(new_volume("dup", "fast", "1Gi"))
        .await
        .unwrap();
    wait_for(&env.store, NS, "dup", is_available, "available").await;
    env.mock.insert_volume(iri_volume(&v.metadata.uid, "dup"));
    let live = |mock: &MockRuntime| {
        mock.volumes()
            .into_iter()
            .filter(|iri| {
                iri_label(iri.metadata.as_ref(), keys::VOLUMEPOOLLET_VOLUME_UID_LABEL)
                    == v.metadata.uid
                    && iri.metadata.as_ref().unwrap().deleted_at == 0
            })
            .count()
    };
    poll_until(|| live(&env.mock) == 1, "duplicate deleted").await;
    env.stop().await;
}

/// A runtime holding more volumes than fit a 4 MiB response (gRPC's default limit, which
/// IronCore's Go poollets keep: about 7,500 volumes) is still relisted: the poollet accepts
/// responses up to `poollet::MAX_RESPONSE_BYTES`, so it sees (and here collects) an orphan
/// listed after 10,000 other volumes.
#[tokio::test]
async fn the_relist_reads_a_runtime_with_more_volumes_than_fit_4_mib() {
    let store = seed(Arc::new(MemoryStore::new())).await;
    let mock = mock().await;
    let padding = "x".repeat(512);
    for i in 0..10_000 {
        let mut v = iri_volume(&format!("uid-bulk-{i}"), &format!("bulk-{i}"));
        if let Some(md) = v.metadata.as_mut() {
            // Not a poollet's volume (no name labels): the relist lists it but enqueues
            // nothing for it, so only the orphan below is reconciled.
            md.labels.clear();
            md.annotations.insert("padding".into(), padding.clone());
        }
        mock.insert_volume(v);
    }
    let orphan = mock.insert_volume(iri_volume("uid-last", "last-orphan"));
    let listed = prost::Message::encoded_len(&volume::ListVolumesResponse {
        volumes: mock.volumes(),
    });
    assert!(
        listed > 4 << 20,
        "the listing is {listed} bytes, over 4 MiB"
    );
    // A debug build lists 10,000 volumes in well over the other tests' 100 ms.
    let mut cfg = config(POOL);
    cfg.pool.status_interval = Duration::from_secs(3);
    cfg.pool.status_timeout = Duration::from_secs(2);
    let env = start_with(store, mock, cfg);
    poll_until(
        || {
            env.mock
                .volume(&orphan)
                .is_none_or(|v| v.metadata.unwrap().deleted_at != 0)
        },
        "the orphan behind 10,000 volumes deleted by the relist",
    )
    .await;
    env.stop().await;
}

#[tokio::test]
async fn runtime_events_become_events_on_the_volume() {
    let env = start().await;
    let created = env
        .store
        .create_typed(new_volume("noisy", "fast", "1Gi"))
        .await
        .unwrap();
    wait_for(&env.store, NS, "noisy", is_available, "available").await;
    let event = wait_any(
        &env.store,
        |e: &Event| e.involved_object.name == "noisy" && e.reason == "Created",
        "the runtime's Created event",
    )
    .await;
    assert_eq!(event.involved_object.kind, "Volume");
    assert_eq!(event.involved_object.uid, created.metadata.uid);
    assert_eq!(event.metadata.namespace, NS);
    assert_eq!(event.action, "Create");
    assert_eq!(event.type_, "Normal");
    let (events, _) = env
        .store
        .list_typed::<Event>(&irikit_api::ListOptions::all())
        .await
        .unwrap();
    let created_events = events
        .iter()
        .filter(|e| e.involved_object.name == "noisy" && e.reason == "Created")
        .count();
    assert_eq!(created_events, 1, "one Event per runtime event");
    env.stop().await;
}

async fn end_to_end(store: Arc<dyn Store>) {
    let store = seed(store).await;
    let env = start_on(store, mock().await, POOL);
    let v: Volume = env
        .create_and_wait(new_volume("e2e", "fast", "2Gi"), is_available, "available")
        .await;
    assert!(v.status.volume_id.starts_with("iri-mock://"));
    let labels: BTreeMap<_, _> = v.metadata.labels.clone();
    assert!(labels.is_empty());
    env.store
        .delete(Kind::Volume, NS, "e2e", None)
        .await
        .unwrap();
    wait_gone(&env.store, Kind::Volume, NS, "e2e").await;
    assert!(env.mock.volumes().is_empty());
    env.stop().await;
}

common::memory_and_etcd!(
    end_to_end_memory,
    end_to_end_etcd,
    "/volumepoollet-test",
    end_to_end
);
