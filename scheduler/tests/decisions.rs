//! The pure core as a case table: every filter, the capacity rule (each bound machine counts
//! once), the tie-break, and exhaustion. Decisions are insta snapshots.
#![allow(clippy::unwrap_used)]

use irikit_api::{
    Object, Resource,
    compute::{Machine, MachinePool},
    meta::{Condition, LocalObjectReference, ObjectMeta, Taint, Toleration},
    storage::{Volume, VolumePool},
};
use rstest::{Context, rstest};
use scheduler::{Cache, Flavor, MachineFlavor, VolumeFlavor};

/// A pool spec: name, Ready status (None = no condition), capacity per class, allocatable
/// per class, labels, taints.
struct P {
    name: &'static str,
    ready: Option<&'static str>,
    capacity: &'static [(&'static str, &'static str)],
    allocatable: &'static [(&'static str, &'static str)],
    labels: &'static [(&'static str, &'static str)],
    taints: &'static [(&'static str, &'static str, &'static str)],
}

const fn p(name: &'static str, capacity: &'static [(&'static str, &'static str)]) -> P {
    P {
        name,
        ready: Some("True"),
        capacity,
        allocatable: &[],
        labels: &[],
        taints: &[],
    }
}

fn conditions(ready: Option<&str>) -> Vec<Condition> {
    ready
        .map(|s| {
            vec![Condition {
                type_: "Ready".into(),
                status: s.into(),
                ..Default::default()
            }]
        })
        .unwrap_or_default()
}

/// `class/<kind>.<class>` → quantity, for `prefix` = `class/<kind>.`.
fn quantities(list: &[(&str, &str)], prefix: &str) -> irikit_api::ResourceList {
    list.iter()
        .map(|(class, q)| (format!("{prefix}{class}"), q.parse().unwrap()))
        .collect()
}

/// The metadata (name, labels) and taints of a pool spec.
fn meta_and_taints(spec: &P) -> (ObjectMeta, Vec<Taint>) {
    let mut metadata = ObjectMeta::named(spec.name);
    metadata.labels = spec
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let taints = spec
        .taints
        .iter()
        .map(|(k, v, e)| Taint {
            key: k.to_string(),
            value: v.to_string(),
            effect: e.to_string(),
        })
        .collect();
    (metadata, taints)
}

fn machine_pool(spec: &P) -> Object {
    let (metadata, taints) = meta_and_taints(spec);
    let mut pool = MachinePool {
        metadata,
        ..Default::default()
    };
    pool.spec.taints = taints;
    pool.status.conditions = conditions(spec.ready);
    pool.status.capacity = quantities(spec.capacity, "class/machine.");
    pool.status.allocatable = quantities(spec.allocatable, "class/machine.");
    pool.into_object()
}

/// A VolumePool (no labels and no allocatable: the volume cases use neither).
fn volume_pool(spec: &P) -> Object {
    let (mut metadata, taints) = meta_and_taints(spec);
    metadata.labels.clear();
    let mut pool = VolumePool {
        metadata,
        ..Default::default()
    };
    pool.spec.taints = taints;
    pool.status.conditions = conditions(spec.ready);
    pool.status.capacity = quantities(spec.capacity, "class/volume.");
    pool.into_object()
}

/// A request: class, selector, tolerations (key, operator, value, effect).
struct R {
    class: &'static str,
    selector: &'static [(&'static str, &'static str)],
    tolerations: &'static [(&'static str, &'static str, &'static str, &'static str)],
    storage: &'static str,
}

const fn r(class: &'static str) -> R {
    R {
        class,
        selector: &[],
        tolerations: &[],
        storage: "",
    }
}

fn tolerations(req: &R) -> Vec<Toleration> {
    req.tolerations
        .iter()
        .map(|(k, o, v, e)| Toleration {
            key: k.to_string(),
            operator: o.to_string(),
            value: v.to_string(),
            effect: e.to_string(),
        })
        .collect()
}

fn machine(req: &R) -> Object {
    let mut m = Machine {
        metadata: ObjectMeta::namespaced("ns", "m"),
        ..Default::default()
    };
    m.metadata.uid = "uid-m".into();
    m.spec.machine_class_ref = LocalObjectReference::new(req.class);
    m.spec.machine_pool_selector = req
        .selector
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    m.spec.tolerations = tolerations(req);
    m.into_object()
}

fn volume(req: &R) -> Object {
    let mut v = Volume {
        metadata: ObjectMeta::namespaced("ns", "v"),
        ..Default::default()
    };
    v.metadata.uid = "uid-v".into();
    v.spec.volume_class_ref = Some(LocalObjectReference::new(req.class));
    v.spec
        .resources
        .insert("storage".into(), req.storage.parse().unwrap());
    v.spec.tolerations = tolerations(req);
    v.into_object()
}

/// The only place that touches the core: builds the snapshot, decides, snapshots the decision.
fn check<F: Flavor>(
    name: &str,
    pools: Vec<Object>,
    bindings: &[(&str, &str, &str, i128)],
    obj: Object,
) {
    let infos = pools.iter().map(|p| F::pool_info(p).unwrap());
    let cache = Cache::from_snapshot(infos, bindings);
    let req = F::request(&obj).unwrap();
    let decision = cache.schedule(&req);
    insta::with_settings!({ snapshot_suffix => name, omit_expression => true }, {
        insta::assert_yaml_snapshot!(decision);
    });
}

#[rstest]
#[case::ready_filter_skips_not_ready(&[P { ready: Some("False"), ..p("a", &[("c", "10")]) }, p("b", &[("c", "1")])], &[], r("c"))]
#[case::ready_unknown_or_absent_excluded(&[P { ready: Some("Unknown"), ..p("a", &[("c", "10")]) }, P { ready: None, ..p("b", &[("c", "10")]) }], &[], r("c"))]
#[case::untolerated_taint_skipped(&[P { taints: &[("gpu", "", "NoSchedule")], ..p("a", &[("c", "10")]) }, p("b", &[("c", "1")])], &[], r("c"))]
#[case::noexecute_taint_also_filters(&[P { taints: &[("k", "v", "NoExecute")], ..p("a", &[("c", "10")]) }], &[], r("c"))]
#[case::taint_tolerated_exists(&[P { taints: &[("gpu", "", "NoSchedule")], ..p("a", &[("c", "10")]) }, p("b", &[("c", "1")])], &[], R { tolerations: &[("gpu", "Exists", "", "")], ..r("c") })]
#[case::taint_tolerated_empty_key_exists(&[P { taints: &[("gpu", "x", "NoSchedule")], ..p("a", &[("c", "10")]) }], &[], R { tolerations: &[("", "Exists", "", "")], ..r("c") })]
#[case::toleration_value_mismatch(&[P { taints: &[("gpu", "a100", "NoSchedule")], ..p("a", &[("c", "10")]) }], &[], R { tolerations: &[("gpu", "Equal", "h100", "")], ..r("c") })]
#[case::toleration_effect_mismatch(&[P { taints: &[("gpu", "", "NoExecute")], ..p("a", &[("c", "10")]) }], &[], R { tolerations: &[("gpu", "Exists", "", "NoSchedule")], ..r("c") })]
#[case::selector_matches(&[p("a", &[("c", "10")]), P { labels: &[("zone", "z2")], ..p("b", &[("c", "1")]) }], &[], R { selector: &[("zone", "z2")], ..r("c") })]
#[case::selector_matches_none(&[P { labels: &[("zone", "z1")], ..p("a", &[("c", "10")]) }], &[], R { selector: &[("zone", "z2")], ..r("c") })]
#[case::class_unsupported(&[p("a", &[("other", "10")])], &[], r("c"))]
#[case::most_free_wins(&[p("a", &[("c", "10")]), p("b", &[("c", "5")])], &[("x1", "a", "c", 1), ("x2", "a", "c", 1), ("x3", "a", "c", 1), ("x4", "a", "c", 1), ("x5", "a", "c", 1), ("x6", "a", "c", 1)], r("c"))]
#[case::tie_break_by_name(&[p("b", &[("c", "3")]), p("a", &[("c", "3")]), p("c", &[("c", "3")])], &[], r("c"))]
#[case::bound_machine_counts_once(&[P { allocatable: &[("c", "1")], ..p("a", &[("c", "2")]) }], &[("x1", "a", "c", 1)], r("c"))]
#[case::allocatable_only_pool(&[P { capacity: &[], allocatable: &[("c", "2")], ..p("a", &[]) }], &[("x1", "a", "c", 1)], r("c"))]
#[case::other_class_bindings_do_not_count(&[p("a", &[("c", "1"), ("d", "1")])], &[("x1", "a", "d", 1)], r("c"))]
#[case::exhausted(&[p("a", &[("c", "1")]), p("b", &[("c", "1")])], &[("x1", "a", "c", 1), ("x2", "b", "c", 1)], r("c"))]
#[case::no_pools(&[], &[], r("c"))]
#[case::zero_capacity(&[p("a", &[("c", "0")])], &[], r("c"))]
fn machine_decisions(
    #[case] pools: &[P],
    #[case] bindings: &[(&str, &str, &str, i128)],
    #[case] req: R,
    #[context] ctx: Context,
) {
    let name = ctx.description.unwrap_or(ctx.name);
    check::<MachineFlavor>(
        &format!("machine-{name}"),
        pools.iter().map(machine_pool).collect(),
        bindings,
        machine(&req),
    );
}

#[rstest]
#[case::fits_most_bytes(&[p("a", &[("fast", "100Gi")]), p("b", &[("fast", "200Gi")])], &[], R { storage: "50Gi", ..r("fast") })]
#[case::largest_remaining_after_bindings(&[p("a", &[("fast", "100Gi")]), p("b", &[("fast", "200Gi")])], &[("v1", "b", "fast", 150 << 30)], R { storage: "10Gi", ..r("fast") })]
#[case::too_big_for_any(&[p("a", &[("fast", "100Gi")])], &[], R { storage: "101Gi", ..r("fast") })]
#[case::no_ready_condition_is_not_filtered(&[P { ready: None, ..p("a", &[("fast", "1Ti")]) }], &[], R { storage: "1Gi", ..r("fast") })]
#[case::ready_false_is_filtered(&[P { ready: Some("False"), ..p("a", &[("fast", "1Ti")]) }], &[], R { storage: "1Gi", ..r("fast") })]
#[case::taint_filters(&[P { taints: &[("k", "", "NoSchedule")], ..p("a", &[("fast", "1Ti")]) }, p("b", &[("fast", "1Gi")])], &[], R { storage: "1Gi", ..r("fast") })]
#[case::tie_break_by_name(&[p("z", &[("fast", "1Ti")]), p("y", &[("fast", "1Ti")])], &[], R { storage: "1Gi", ..r("fast") })]
fn volume_decisions(
    #[case] pools: &[P],
    #[case] bindings: &[(&str, &str, &str, i128)],
    #[case] req: R,
    #[context] ctx: Context,
) {
    let name = ctx.description.unwrap_or(ctx.name);
    check::<VolumeFlavor>(
        &format!("volume-{name}"),
        pools.iter().map(volume_pool).collect(),
        bindings,
        volume(&req),
    );
}

#[test]
fn assume_and_forget_burst() {
    let pools = [p("a", &[("c", "2")]), p("b", &[("c", "1")])];
    let mut cache = Cache::from_snapshot(
        pools
            .iter()
            .map(|s| MachineFlavor::pool_info(&machine_pool(s)).unwrap()),
        &[],
    );
    let req = MachineFlavor::request(&machine(&r("c"))).unwrap();
    let mut placed = Vec::new();
    for i in 0..4 {
        match cache.schedule(&req) {
            scheduler::Decision::Bind { pool, .. } => {
                cache.assume(&format!("u{i}"), &pool, "c", 1);
                placed.push(pool);
            }
            scheduler::Decision::Unschedulable { .. } => placed.push("-".into()),
        }
    }
    assert_eq!(placed, ["a", "a", "b", "-"]);
    cache.forget("u0");
    assert_eq!(cache.free("a", "c"), Some(1));
    cache.add_instance("u1", "a", "c", 1); // confirm an assumed one: no double count
    assert_eq!(cache.free("a", "c"), Some(1));
    cache.forget("u1"); // bound instances are not forgotten
    assert_eq!(cache.free("a", "c"), Some(1));
    cache.remove_instance("u1");
    assert_eq!(cache.free("a", "c"), Some(2));
}
