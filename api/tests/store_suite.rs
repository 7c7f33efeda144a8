//! One Store test suite, run against every backend: the in-memory store always, and etcd
//! when an `etcd` binary is on PATH (required when `IRIKIT_REQUIRE` names `etcd`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use futures::StreamExt;
use irikit_api::{
    Kind, ListOptions, Object, Resource, Store,
    compute::{Machine, MachinePool},
    meta::{LocalObjectReference, ObjectMeta},
    reservation::{Reservation, ReservationPoolStatus, ReservationState},
    store::{Error, EventType, KnownUpdate, WatchStream, memory::MemoryStore},
};

fn machine(ns: &str, name: &str, class: &str) -> Object {
    let mut m = Machine {
        metadata: ObjectMeta::namespaced(ns, name),
        ..Default::default()
    };
    m.spec.machine_class_ref = LocalObjectReference::new(class);
    m.into_object()
}

fn pool(name: &str) -> Object {
    MachinePool {
        metadata: ObjectMeta::named(name),
        ..Default::default()
    }
    .into_object()
}

fn as_machine(obj: Object) -> Machine {
    obj.into_typed().unwrap()
}

fn as_pool(obj: Object) -> MachinePool {
    obj.into_typed().unwrap()
}

/// A write that failed with an error naming `want`.
fn assert_refused(res: irikit_api::store::Result<Object>, want: &str) {
    let err = res.unwrap_err();
    assert!(err.to_string().contains(want), "{err}");
}

async fn next(stream: &mut WatchStream) -> irikit_api::store::WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("watch event in time")
        .unwrap()
        .unwrap()
}

/// Runs every check against `store`.
async fn suite(store: Arc<dyn Store>) {
    create_get(&*store).await;
    update_conflict_generation(&*store).await;
    list_selectors(&*store).await;
    finalizers(&*store).await;
    watch_after_list_no_gaps(store.clone()).await;
    update_many_atomic(&*store).await;
    update_many_from_known(&*store).await;
    compaction_expires(&*store).await;
    reservations(&*store).await;
}

/// A Reservation: created with a spec, states written through the status subresource, the
/// resources immutable and pools never back to all, listed by namespace, applied from YAML as `irikit apply` does, deleted.
async fn reservations(store: &dyn Store) {
    let yaml = "apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\n\
metadata: {name: r1, namespace: rsv}\n\
spec: {pools: [p1], resources: {class/machine.small: 1, cpu: 2, memory: 4Gi, localStorage: 20Gi}}\n";
    let obj = irikit_api::parse_yaml_documents(yaml).unwrap().remove(0);
    let created: Reservation = store.create(obj).await.unwrap().into_typed().unwrap();
    assert_eq!(created.metadata.generation, 1);
    assert!(created.status.pools.is_empty());
    assert_eq!(created.spec.resources.len(), 4);
    // Status through update_status only; no generation bump.
    let mut r = created.clone();
    r.status.pools.push(ReservationPoolStatus {
        name: "p1".into(),
        state: ReservationState::Accepted,
    });
    let ignored: Reservation = store
        .update(r.clone().into_object())
        .await
        .unwrap()
        .into_typed()
        .unwrap();
    assert!(
        ignored.status.pools.is_empty(),
        "update must not write status"
    );
    r.metadata.resource_version = ignored.metadata.resource_version.clone();
    let with_status: Reservation = store
        .update_status(r.into_object())
        .await
        .unwrap()
        .into_typed()
        .unwrap();
    assert_eq!(
        with_status.pool_state("p1"),
        Some(ReservationState::Accepted)
    );
    assert_eq!(with_status.metadata.generation, 1);
    // The resources are immutable, and the pools never go back to all.
    let mut changed = with_status.clone();
    changed.spec.pools.clear();
    assert_refused(
        store.update(changed.into_object()).await,
        "spec.pools: Invalid value: may not go back to every pool",
    );
    let mut changed = with_status.clone();
    changed
        .spec
        .resources
        .insert("cpu".into(), "3".parse().unwrap());
    assert_refused(
        store.update(changed.into_object()).await,
        "spec.resources: Invalid value: field is immutable",
    );
    // Invalid resources are refused with the field path.
    let bad = irikit_api::parse_yaml_documents(
        "apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r2, namespace: rsv}\nspec: {resources: {nics: 2}}",
    )
    .unwrap()
    .remove(0);
    assert_refused(store.create(bad).await, "spec.resources[nics]");
    // Apply (`irikit apply`'s path) writes a document's status too.
    let applied = irikit_api::parse_yaml_documents(&format!(
        "{}status: {{pools: [{{name: p1, state: Bound}}]}}\n",
        yaml.replace("name: r1", "name: r3")
    ))
    .unwrap()
    .remove(0);
    let applied: Reservation = irikit_api::store::apply(store, applied)
        .await
        .unwrap()
        .into_typed()
        .unwrap();
    assert_eq!(applied.pool_state("p1"), Some(ReservationState::Bound));
    let list = store
        .list(Kind::Reservation, &ListOptions::all().in_namespace("rsv"))
        .await
        .unwrap();
    let names: Vec<_> = list
        .items
        .iter()
        .map(|o| o.metadata().name.clone())
        .collect();
    assert_eq!(names, ["r1", "r3"]);
    store
        .delete(Kind::Reservation, "rsv", "r1", None)
        .await
        .unwrap();
    assert!(matches!(
        store.get(Kind::Reservation, "rsv", "r1").await,
        Err(Error::NotFound { .. })
    ));
}

async fn create_get(store: &dyn Store) {
    let created = store.create(machine("cg", "m1", "small")).await.unwrap();
    let meta = created.metadata();
    assert_eq!(meta.generation, 1);
    assert_eq!(meta.uid.len(), 36);
    assert!(meta.creation_timestamp.is_some());
    assert!(!meta.resource_version.is_empty());
    let got = store.get(Kind::Machine, "cg", "m1").await.unwrap();
    assert_eq!(got, created);
    assert!(matches!(
        store.create(machine("cg", "m1", "small")).await,
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.get(Kind::Machine, "cg", "nope").await,
        Err(Error::NotFound { .. })
    ));
    // Invalid: no class.
    assert_refused(
        store.create(machine("cg", "m2", "")).await,
        "spec.machineClassRef",
    );
    // Cluster-scoped kinds ignore the namespace argument of get.
    store.create(pool("cg-pool")).await.unwrap();
    store.get(Kind::MachinePool, "", "cg-pool").await.unwrap();
}

async fn update_conflict_generation(store: &dyn Store) {
    let v1 = store.create(machine("up", "m1", "small")).await.unwrap();
    // Metadata-only change: no generation bump.
    let mut m = as_machine(v1.clone());
    m.metadata.labels.insert("a".into(), "1".into());
    let v2 = store.update(m.into_object()).await.unwrap();
    assert_eq!(v2.metadata().generation, 1);
    assert_ne!(
        v2.metadata().resource_version,
        v1.metadata().resource_version
    );
    // Stale resourceVersion → Conflict.
    let mut stale = as_machine(v1.clone());
    stale
        .spec
        .machine_pool_selector
        .insert("x".into(), "y".into());
    assert!(matches!(
        store.update(stale.into_object()).await,
        Err(Error::Conflict { .. })
    ));
    // Spec change: generation bump.
    let mut m = as_machine(v2.clone());
    m.spec.machine_pool_selector.insert("x".into(), "y".into());
    m.status.state = "Running".into(); // ignored by update
    let v3 = store.update(m.into_object()).await.unwrap();
    assert_eq!(v3.metadata().generation, 2);
    assert_eq!(as_machine(v3.clone()).status.state, "");
    // Status update: no generation bump, spec unchanged.
    let mut m = as_machine(v3.clone());
    m.status.state = "Running".into();
    m.spec.machine_pool_selector.clear(); // ignored by update_status
    let v4 = as_machine(store.update_status(m.into_object()).await.unwrap());
    assert_eq!(v4.metadata.generation, 2);
    assert_eq!(v4.status.state, "Running");
    assert_eq!(v4.spec.machine_pool_selector.len(), 1);
    // Immutable class and set-once pool ref.
    let mut m = v4.clone();
    m.spec.machine_class_ref.name = "large".into();
    assert_refused(
        store.update(m.into_object()).await,
        "spec.machineClassRef: Invalid value: field is immutable",
    );
    let mut m = v4.clone();
    m.spec.machine_pool_ref = Some(LocalObjectReference::new("p1"));
    let v5 = as_machine(store.update(m.into_object()).await.unwrap());
    let mut m = v5.clone();
    m.spec.machine_pool_ref = Some(LocalObjectReference::new("p2"));
    assert_refused(store.update(m.into_object()).await, "set once");
    // An empty resourceVersion is an unconditional update.
    let mut m = v5.clone();
    m.metadata.resource_version.clear();
    m.metadata.annotations.insert("k".into(), "v".into());
    store.update(m.into_object()).await.unwrap();
    assert!(matches!(
        store.update(machine("up", "ghost", "c")).await,
        Err(Error::NotFound { .. })
    ));
}

async fn list_selectors(store: &dyn Store) {
    for (ns, name, class, pool_ref, label) in [
        ("ls-a", "m1", "small", None, "x"),
        ("ls-a", "m2", "large", Some("p1"), "y"),
        ("ls-b", "m3", "small", Some("p1"), "x"),
        ("ls-b", "m4", "small", Some("p2"), "y"),
    ] {
        let mut m = as_machine(machine(ns, name, class));
        m.metadata.labels.insert("tier".into(), label.into());
        m.spec.machine_pool_ref = pool_ref.map(LocalObjectReference::new);
        store.create(m.into_object()).await.unwrap();
    }
    let names = |list: irikit_api::store::ObjectList| -> Vec<String> {
        list.items
            .iter()
            .map(|o| o.metadata().name.clone())
            .collect()
    };
    let ls = |opts: ListOptions| async move { store.list(Kind::Machine, &opts).await.unwrap() };
    assert_eq!(
        names(ls(ListOptions::all().in_namespace("ls-a")).await),
        ["m1", "m2"]
    );
    let in_ls = |o: ListOptions| o.label("tier", "x");
    let got: Vec<_> = names(ls(in_ls(ListOptions::all())).await)
        .into_iter()
        .filter(|n| n == "m1" || n == "m3")
        .collect();
    assert_eq!(got, ["m1", "m3"]);
    // (namespace, label tier, field, value) → the names listed.
    for (ns, tier, field, value, want) in [
        ("ls-b", None, "spec.machinePoolRef.name", "p1", ["m3"]),
        ("ls-a", None, "spec.machinePoolRef.name", "", ["m1"]),
        ("ls-a", None, "spec.machineClassRef.name", "large", ["m2"]),
        (
            "ls-b",
            Some("y"),
            "spec.machineClassRef.name",
            "small",
            ["m4"],
        ),
    ] {
        let mut options = ListOptions::all().in_namespace(ns);
        if let Some(tier) = tier {
            options = options.label("tier", tier);
        }
        let options = options.field(field, value);
        assert_eq!(
            names(ls(options).await),
            want,
            "{ns} {tier:?} {field}={value}"
        );
    }
    let err = store
        .list(
            Kind::MachinePool,
            &ListOptions::all().field("spec.machinePoolRef.name", ""),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadRequest(_)), "{err}");
}

async fn finalizers(store: &dyn Store) {
    let mut m = as_machine(machine("fin", "m1", "small"));
    m.metadata.finalizers = vec!["a/one".into(), "a/two".into()];
    store.create(m.into_object()).await.unwrap();
    let pending = store
        .delete(Kind::Machine, "fin", "m1", None)
        .await
        .unwrap()
        .expect("kept while finalizers remain");
    assert!(pending.metadata().deletion_timestamp.is_some());
    let got = store.get(Kind::Machine, "fin", "m1").await.unwrap();
    assert!(got.metadata().is_deleting());
    // A second delete changes nothing.
    let again = store
        .delete(Kind::Machine, "fin", "m1", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.metadata().resource_version,
        got.metadata().resource_version
    );
    // No new finalizers while deleting.
    let mut m = as_machine(got.clone());
    m.metadata.finalizers.push("a/three".into());
    assert_refused(store.update(m.into_object()).await, "metadata.finalizers");
    // The deletion timestamp cannot be cleared by an update.
    let mut m = as_machine(got);
    m.metadata.finalizers = vec!["a/two".into()];
    m.metadata.deletion_timestamp = None;
    let m = as_machine(store.update(m.into_object()).await.unwrap());
    assert!(m.metadata.is_deleting());
    let mut m = m;
    m.metadata.finalizers.clear();
    store.update(m.into_object()).await.unwrap();
    assert!(matches!(
        store.get(Kind::Machine, "fin", "m1").await,
        Err(Error::NotFound { .. })
    ));
    // Without finalizers: removed at once; precondition checked.
    let created = store.create(machine("fin", "m2", "small")).await.unwrap();
    assert!(matches!(
        store.delete(Kind::Machine, "fin", "m2", Some("1")).await,
        Err(Error::Conflict { .. })
    ));
    let rv = created.metadata().resource_version.clone();
    assert!(
        store
            .delete(Kind::Machine, "fin", "m2", Some(&rv))
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.delete(Kind::Machine, "fin", "m2", None).await,
        Err(Error::NotFound { .. })
    ));
}

async fn watch_after_list_no_gaps(store: Arc<dyn Store>) {
    const N: usize = 300;
    // A writer creates N machines while we list and then watch from the list's revision.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..N {
                store
                    .create(machine("wl", &format!("m{i:04}"), "small"))
                    .await
                    .unwrap();
                if i % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    tokio::task::yield_now().await;
    let list = store
        .list(Kind::Machine, &ListOptions::all().in_namespace("wl"))
        .await
        .unwrap();
    let mut seen: BTreeSet<String> = list
        .items
        .iter()
        .map(|o| o.metadata().name.clone())
        .collect();
    let mut stream = store
        .watch(Some(Kind::Machine), list.revision)
        .await
        .unwrap();
    let mut last = list.revision;
    while seen.len() < N {
        let ev = next(&mut stream).await;
        assert!(
            ev.revision > last,
            "revisions increase: {} after {last}",
            ev.revision
        );
        last = ev.revision;
        assert_eq!(ev.type_, EventType::Added);
        assert_eq!(
            ev.object.metadata().resource_version,
            ev.revision.to_string()
        );
        assert!(
            seen.insert(ev.object.metadata().name.clone()),
            "duplicate {}",
            ev.object.key()
        );
    }
    writer.await.unwrap();
    // Modified and Deleted arrive in order, filtered by kind.
    let m = store.get(Kind::Machine, "wl", "m0000").await.unwrap();
    store.create(pool("wl-pool")).await.unwrap();
    let mut m = as_machine(m);
    m.metadata.labels.insert("k".into(), "v".into());
    store.update(m.into_object()).await.unwrap();
    store
        .delete(Kind::Machine, "wl", "m0000", None)
        .await
        .unwrap();
    let ev = next(&mut stream).await;
    assert_eq!(
        (ev.type_, ev.object.metadata().name.as_str()),
        (EventType::Modified, "m0000")
    );
    let ev = next(&mut stream).await;
    assert_eq!(
        (ev.type_, ev.object.metadata().name.as_str()),
        (EventType::Deleted, "m0000")
    );
    assert_eq!(
        ev.object.metadata().labels.get("k").map(String::as_str),
        Some("v")
    );
    assert_eq!(
        ev.object.metadata().resource_version,
        ev.revision.to_string(),
        "a Deleted event carries the deletion revision"
    );
    // A watch over all kinds sees the pool too, from an older revision (replay).
    let mut all = store.watch(None, last).await.unwrap();
    let ev = next(&mut all).await;
    assert_eq!(ev.object.kind(), Kind::MachinePool);
}

async fn update_many_atomic(store: &dyn Store) {
    let m = store.create(machine("um", "m1", "small")).await.unwrap();
    let p = store.create(pool("um-pool")).await.unwrap();
    // One stale precondition: nothing is written.
    let mut bound = as_machine(m.clone());
    bound.spec.machine_pool_ref = Some(LocalObjectReference::new("um-pool"));
    let mut stale_pool = p.clone();
    stale_pool.metadata_mut().resource_version = "1".into();
    let err = store
        .update_many(vec![bound.clone().into_object(), stale_pool])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(store.get(Kind::Machine, "um", "m1").await.unwrap(), m);
    // Both current: both written at one revision.
    let mut p2 = p.clone();
    p2.metadata_mut()
        .annotations
        .insert("bind".into(), "1".into());
    let out = store
        .update_many(vec![bound.into_object(), p2])
        .await
        .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[0].metadata().resource_version,
        out[1].metadata().resource_version
    );
    let got = as_machine(store.get(Kind::Machine, "um", "m1").await.unwrap());
    assert_eq!(got.spec.machine_pool_ref.unwrap().name, "um-pool");
    assert_eq!(got.metadata.generation, 2);
}

async fn update_many_from_known(store: &dyn Store) {
    let m = store.create(machine("umf", "m1", "small")).await.unwrap();
    let mut p = as_pool(store.create(pool("umf-pool")).await.unwrap());
    p.status.state = "Ready".into();
    let p = store.update_status(p.into_object()).await.unwrap();
    let bind = |m: &Object, p: &Object, n: &str| {
        let mut bound = as_machine(m.clone());
        bound.spec.machine_pool_ref = Some(LocalObjectReference::new("umf-pool"));
        let mut claimed = p.clone();
        claimed
            .metadata_mut()
            .annotations
            .insert("bind".into(), n.into());
        vec![
            KnownUpdate::new(m.clone(), bound.into_object()),
            KnownUpdate::new(p.clone(), claimed),
        ]
    };
    // Current versions: both written at one revision; spec change bumps the generation,
    // status is kept.
    let out = store.update_many_from(bind(&m, &p, "1")).await.unwrap();
    assert_eq!(out.len(), 2);
    let rv = out[0].metadata().resource_version.clone();
    assert_eq!(out[1].metadata().resource_version, rv);
    assert_eq!(store.get(Kind::Machine, "umf", "m1").await.unwrap(), out[0]);
    assert_eq!(
        store.get(Kind::MachinePool, "", "umf-pool").await.unwrap(),
        out[1]
    );
    let got = as_machine(out[0].clone());
    assert_eq!(got.spec.machine_pool_ref.unwrap().name, "umf-pool");
    assert_eq!(got.metadata.generation, 2);
    assert_eq!(got.metadata.uid, m.metadata().uid);
    assert_eq!(as_pool(out[1].clone()).status.state, "Ready");
    assert_eq!(out[1].metadata().generation, p.metadata().generation);
    // A stale `current` (the pool moved on): Conflict, nothing written.
    let m2 = store.create(machine("umf", "m2", "small")).await.unwrap();
    let err = store
        .update_many_from(bind(&m2, &p, "2"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(store.get(Kind::Machine, "umf", "m2").await.unwrap(), m2);
    assert_eq!(
        store.get(Kind::MachinePool, "", "umf-pool").await.unwrap(),
        out[1]
    );
    // The pool as returned by the last write is current: the next bind chains on it.
    let next = store
        .update_many_from(bind(&m2, &out[1], "2"))
        .await
        .unwrap();
    assert!(next[1].revision() > out[1].revision());
    // The desired object's own resourceVersion is ignored; `current` is the precondition.
    let mut m3 = store.create(machine("umf", "m3", "small")).await.unwrap();
    let mut desired = as_machine(m3.clone());
    desired.metadata.labels.insert("k".into(), "v".into());
    desired.metadata.resource_version = "1".into();
    let out = store
        .update_many_from(vec![KnownUpdate::new(m3.clone(), desired.into_object())])
        .await
        .unwrap();
    assert_eq!(out[0].metadata().labels["k"], "v");
    // A status-only write from a known version: status replaced, spec and metadata kept,
    // no generation bump; a stale version conflicts.
    let mut status = as_machine(out[0].clone());
    status.status.state = "Running".into();
    status.metadata.labels.insert("ignored".into(), "x".into());
    status.spec.machine_class_ref = LocalObjectReference::new("ignored");
    let written = store
        .update_many_from(vec![KnownUpdate::status(
            out[0].clone(),
            status.clone().into_object(),
        )])
        .await
        .unwrap();
    let got = as_machine(store.get(Kind::Machine, "umf", "m3").await.unwrap());
    assert_eq!(as_machine(written[0].clone()), got);
    assert_eq!(got.status.state, "Running");
    assert!(!got.metadata.labels.contains_key("ignored"));
    assert_eq!(got.spec.machine_class_ref.name, "small");
    assert_eq!(got.metadata.generation, out[0].metadata().generation);
    let err = store
        .update_many_from(vec![KnownUpdate::status(
            out[0].clone(),
            status.into_object(),
        )])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    // No precondition at all: a clear error, nothing written.
    m3.metadata_mut().resource_version.clear();
    let err = store
        .update_many_from(vec![KnownUpdate::new(m3.clone(), m3)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadRequest(_)), "{err}");
}

async fn compaction_expires(store: &dyn Store) {
    let first = store
        .create(machine("cx", "m1", "small"))
        .await
        .unwrap()
        .revision();
    for i in 2..6 {
        store
            .create(machine("cx", &format!("m{i}"), "small"))
            .await
            .unwrap();
    }
    let current = store.revision().await.unwrap();
    store.compact(current).await.unwrap();
    match store.watch(Some(Kind::Machine), first).await {
        Err(Error::Expired { .. }) => {}
        Err(other) => panic!("want Expired, got {other}"),
        Ok(_) => panic!("want Expired, got a watch"),
    }
    // Resync: relist and watch from the list's revision.
    let list = store
        .list(Kind::Machine, &ListOptions::all().in_namespace("cx"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 5);
    let mut stream = store
        .watch(Some(Kind::Machine), list.revision)
        .await
        .unwrap();
    store.create(machine("cx", "m9", "small")).await.unwrap();
    assert_eq!(next(&mut stream).await.object.metadata().name, "m9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend() {
    suite(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn memory_lagging_watcher_expires() {
    let store = MemoryStore::with_history(16);
    let mut stream = store.watch(Some(Kind::Machine), 0).await.unwrap();
    for i in 0..40 {
        store
            .create(machine("lag", &format!("m{i}"), "small"))
            .await
            .unwrap();
    }
    let mut saw_expired = false;
    while let Some(res) = stream.next().await {
        if let Err(Error::Expired { .. }) = res {
            saw_expired = true;
            break;
        }
    }
    assert!(saw_expired);
    assert!(matches!(
        store.watch(Some(Kind::Machine), 1).await,
        Err(Error::Expired { .. })
    ));
}

/// etcd is missing (`why`): a failure when `IRIKIT_REQUIRE` names etcd, else one `skip:` line.
fn skip_without_etcd(why: &str) {
    let required = std::env::var("IRIKIT_REQUIRE").unwrap_or_default();
    assert!(
        !required.split(',').any(|c| c.trim() == "etcd"),
        "etcd is required (IRIKIT_REQUIRE) but {why}"
    );
    let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("skip: {why}\n"));
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend() {
    use irikit_api::store::etcd::LocalEtcd;
    if LocalEtcd::binary().is_none() {
        skip_without_etcd("etcd is not on PATH (install etcd-server)");
        return;
    }
    let etcd = LocalEtcd::start(None).await.unwrap();
    let store = etcd.store("/irikit-test").await.unwrap();
    suite(Arc::new(store)).await;
}

#[cfg(not(feature = "etcd"))]
#[test]
fn etcd_backend() {
    skip_without_etcd("irikit-api was built without the `etcd` feature");
}
