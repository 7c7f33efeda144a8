//! IronCore's validation rules as a case table: each case names the field path of the error.
#![allow(clippy::unwrap_used)]

use irikit_api::{Object, parse_yaml_documents, validation};
use rstest::rstest;

fn check(yaml: &str) -> Vec<String> {
    let obj: Object = parse_yaml_documents(yaml).unwrap().remove(0);
    validation::validate(&obj)
        .into_iter()
        .map(|e| e.path)
        .collect()
}

const M: &str = "apiVersion: compute.ironcore.dev/v1alpha1\nkind: Machine\nmetadata: {name: m, namespace: ns}\n";

#[rstest]
#[case::valid(&format!("{M}spec: {{machineClassRef: {{name: c}}}}"), &[])]
#[case::class_required(&format!("{M}spec: {{}}"), &["spec.machineClassRef"])]
#[case::namespace_required("apiVersion: compute.ironcore.dev/v1alpha1\nkind: Machine\nmetadata: {name: m}\nspec: {machineClassRef: {name: c}}", &["metadata.namespace"])]
#[case::bad_name("apiVersion: compute.ironcore.dev/v1alpha1\nkind: Machine\nmetadata: {name: M_1, namespace: ns}\nspec: {machineClassRef: {name: c}}", &["metadata.name"])]
#[case::pool_namespaced("apiVersion: compute.ironcore.dev/v1alpha1\nkind: MachinePool\nmetadata: {name: p, namespace: ns}", &["metadata.namespace"])]
#[case::device_ok(&format!("{M}spec: {{machineClassRef: {{name: c}}, volumes: [{{name: a, device: oda, volumeRef: {{name: v}}}}, {{name: b, device: odab, emptyDisk: {{}}}}]}}"), &[])]
#[case::device_bad(&format!("{M}spec: {{machineClassRef: {{name: c}}, volumes: [{{name: a, device: od1, volumeRef: {{name: v}}}}]}}"), &["spec.volumes[0].device"])]
#[case::device_too_long(&format!("{M}spec: {{machineClassRef: {{name: c}}, volumes: [{{name: a, device: odabc, volumeRef: {{name: v}}}}]}}"), &["spec.volumes[0].device"])]
#[case::device_duplicate(&format!("{M}spec: {{machineClassRef: {{name: c}}, volumes: [{{name: a, device: oda, volumeRef: {{name: v}}}}, {{name: b, device: oda, volumeRef: {{name: w}}}}]}}"), &["spec.volumes[1].device"])]
#[case::volume_name_duplicate(&format!("{M}spec: {{machineClassRef: {{name: c}}, volumes: [{{name: a, volumeRef: {{name: v}}}}, {{name: a, volumeRef: {{name: w}}}}]}}"), &["spec.volumes[1].name"])]
#[case::volume_no_source(&format!("{M}spec: {{machineClassRef: {{name: c}}, volumes: [{{name: a}}]}}"), &["spec.volumes[0]"])]
#[case::volume_two_sources(&format!("{M}spec: {{machineClassRef: {{name: c}}, volumes: [{{name: a, volumeRef: {{name: v}}, localDisk: {{image: x}}}}]}}"), &["spec.volumes[0]"])]
#[case::negative_size(&format!("{M}spec: {{machineClassRef: {{name: c}}, volumes: [{{name: a, localDisk: {{sizeLimit: -1Gi}}}}]}}"), &["spec.volumes[0].sizeLimit"])]
#[case::nic_two_sources(&format!("{M}spec: {{machineClassRef: {{name: c}}, networkInterfaces: [{{name: n, networkInterfaceRef: {{name: x}}, ephemeral: {{}}}}]}}"), &["spec.networkInterfaces[0]"])]
#[case::nic_duplicate(&format!("{M}spec: {{machineClassRef: {{name: c}}, networkInterfaces: [{{name: n, ephemeral: {{}}}}, {{name: n, ephemeral: {{}}}}]}}"), &["spec.networkInterfaces[1].name"])]
#[case::hostname(&format!("{M}spec: {{machineClassRef: {{name: c}}, guestConfig: {{hostname: Not_A_Label}}}}"), &["spec.guestConfig.hostname"])]
#[case::toleration_exists_value(&format!("{M}spec: {{machineClassRef: {{name: c}}, tolerations: [{{key: k, operator: Exists, value: v}}]}}"), &["spec.tolerations[0].value"])]
#[case::toleration_operator(&format!("{M}spec: {{machineClassRef: {{name: c}}, tolerations: [{{key: k, operator: Lt}}]}}"), &["spec.tolerations[0].operator"])]
#[case::toleration_effect(&format!("{M}spec: {{machineClassRef: {{name: c}}, tolerations: [{{key: k, effect: Sometimes}}]}}"), &["spec.tolerations[0].effect"])]
#[case::ignition_name(&format!("{M}spec: {{machineClassRef: {{name: c}}, ignitionRef: {{key: x}}}}"), &["spec.ignitionRef.name"])]
#[case::taint_effect("apiVersion: compute.ironcore.dev/v1alpha1\nkind: MachinePool\nmetadata: {name: p}\nspec: {taints: [{key: k, effect: Maybe}]}", &["spec.taints[0].effect"])]
#[case::taint_key("apiVersion: compute.ironcore.dev/v1alpha1\nkind: MachinePool\nmetadata: {name: p}\nspec: {taints: [{key: '', effect: NoSchedule}]}", &["spec.taints[0].key"])]
#[case::class_capabilities("apiVersion: compute.ironcore.dev/v1alpha1\nkind: MachineClass\nmetadata: {name: c}\ncapabilities: {}", &["capabilities"])]
#[case::class_negative("apiVersion: compute.ironcore.dev/v1alpha1\nkind: MachineClass\nmetadata: {name: c}\ncapabilities: {cpu: -1}", &["capabilities[cpu]"])]
#[case::volume_storage_required("apiVersion: storage.ironcore.dev/v1alpha1\nkind: Volume\nmetadata: {name: v, namespace: ns}\nspec: {volumeClassRef: {name: fast}}", &["spec.resources[storage]"])]
#[case::volume_ok("apiVersion: storage.ironcore.dev/v1alpha1\nkind: Volume\nmetadata: {name: v, namespace: ns}\nspec: {volumeClassRef: {name: fast}, resources: {storage: 10Gi}}", &[])]
#[case::volume_two_data_sources("apiVersion: storage.ironcore.dev/v1alpha1\nkind: Volume\nmetadata: {name: v, namespace: ns}\nspec: {dataSource: {volumeSnapshotRef: {name: s}, osImage: {image: i}}}", &["spec.dataSource"])]
#[case::snapshot_volume("apiVersion: storage.ironcore.dev/v1alpha1\nkind: VolumeSnapshot\nmetadata: {name: s, namespace: ns}\nspec: {}", &["spec.volumeRef.name"])]
#[case::volume_class_policy("apiVersion: storage.ironcore.dev/v1alpha1\nkind: VolumeClass\nmetadata: {name: c}\ncapabilities: {tps: 100Mi, iops: 1000}\nresizePolicy: Shrink", &["resizePolicy"])]
#[case::event_reason("apiVersion: v1\nkind: Event\nmetadata: {name: e, namespace: ns}\ninvolvedObject: {name: m}", &["reason"])]
#[case::secret_key("apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: ns}\ndata: {'a b': eA==}", &["data[a b]"])]
#[case::reservation_ok("apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r, namespace: ns}\nspec: {pools: [p1], resources: {class/machine.small: 2, cpu: 500m, memory: 1Gi, localStorage: 10Gi}}", &[])]
#[case::reservation_all_pools("apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r, namespace: ns}\nspec: {resources: {cpu: 1}}", &[])]
#[case::reservation_resources_required("apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r, namespace: ns}\nspec: {pools: [p1]}", &["spec.resources"])]
#[case::reservation_unknown_resource("apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r, namespace: ns}\nspec: {resources: {nics: 2}}", &["spec.resources[nics]"])]
#[case::reservation_fractional_count("apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r, namespace: ns}\nspec: {resources: {class/machine.small: 500m}}", &["spec.resources[class/machine.small]"])]
#[case::reservation_zero_count("apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r, namespace: ns}\nspec: {resources: {class/machine.small: 0}}", &["spec.resources[class/machine.small]"])]
#[case::reservation_bad_class("apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r, namespace: ns}\nspec: {resources: {class/machine.Big_1: 1}}", &["spec.resources[class/machine.Big_1]"])]
#[case::reservation_negative("apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r, namespace: ns}\nspec: {resources: {localStorage: -1Gi}}", &["spec.resources[localStorage]"])]
#[case::reservation_pool_duplicate("apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r, namespace: ns}\nspec: {pools: [p1, p1], resources: {cpu: 1}}", &["spec.pools[1]"])]
#[case::reservation_pool_name("apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r, namespace: ns}\nspec: {pools: [P_1], resources: {cpu: 1}}", &["spec.pools[0]"])]
#[case::reservation_status_duplicate("apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r, namespace: ns}\nspec: {resources: {cpu: 1}}\nstatus: {pools: [{name: p, state: Accepted}, {name: p, state: Bound}]}", &["status.pools[1].name"])]
#[case::reservation_namespaced("apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r}\nspec: {resources: {cpu: 1}}", &["metadata.namespace"])]
fn validate_cases(#[case] yaml: &str, #[case] want: &[&str]) {
    assert_eq!(check(yaml), want, "{yaml}");
}

#[rstest]
#[case::unknown_kind("apiVersion: v1\nkind: Pod\nmetadata: {name: p}", "unknown kind")]
#[case::wrong_api_version("apiVersion: v1\nkind: Machine\nmetadata: {name: p}", "apiVersion")]
#[case::bad_quantity(
    "apiVersion: compute.ironcore.dev/v1alpha1\nkind: MachineClass\nmetadata: {name: c}\ncapabilities: {cpu: 4x}",
    "quantities must match"
)]
#[case::bad_power(
    "apiVersion: compute.ironcore.dev/v1alpha1\nkind: Machine\nmetadata: {name: m, namespace: n}\nspec: {power: Maybe}",
    "unknown variant"
)]
#[case::reservation_state(
    "apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r, namespace: n}\nstatus: {pools: [{name: p, state: Held}]}",
    "unknown variant"
)]
fn parse_errors(#[case] yaml: &str, #[case] want: &str) {
    let err = parse_yaml_documents(yaml).unwrap_err().to_string();
    assert!(err.contains(want), "{err}");
}

#[test]
fn reservation_spec_is_immutable() {
    let old = parse_yaml_documents(&format!(
        "{RSV}spec: {{pools: [p1], resources: {{cpu: 1}}}}"
    ))
    .unwrap()
    .remove(0);
    let same_spec_new_status = parse_yaml_documents(&format!(
        "{RSV}spec: {{pools: [p1], resources: {{cpu: 1}}}}\nstatus: {{pools: [{{name: p1, state: Accepted}}]}}"
    ))
    .unwrap()
    .remove(0);
    assert!(validation::validate_update(&old, &same_spec_new_status).is_empty());
    let other = parse_yaml_documents(&format!(
        "{RSV}spec: {{pools: [p1], resources: {{cpu: 2}}}}"
    ))
    .unwrap()
    .remove(0);
    let paths: Vec<_> = validation::validate_update(&old, &other)
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(paths, ["spec.resources"]);
}

/// `spec.pools` may go from all pools (empty) to some, and from some to others (narrowed by
/// the scheduler, asked in turns by a broker); never back to all.
#[rstest::rstest]
#[case("[]", "[p1]", true)]
#[case("[p1, p2]", "[p2]", true)]
#[case("[p1, p2]", "[p1, p2]", true)]
#[case("[p1]", "[p1, p2]", true)]
#[case("[p1]", "[p2]", true)]
#[case("[p1]", "[]", false)]
#[case("[p1, p2]", "[]", false)]
fn reservation_pools_never_back_to_all(#[case] from: &str, #[case] to: &str, #[case] ok: bool) {
    let doc = |pools: &str| {
        parse_yaml_documents(&format!(
            "{RSV}spec: {{pools: {pools}, resources: {{cpu: 1}}}}"
        ))
        .unwrap()
        .remove(0)
    };
    let paths: Vec<_> = validation::validate_update(&doc(from), &doc(to))
        .into_iter()
        .map(|e| e.path)
        .collect();
    if ok {
        assert!(paths.is_empty(), "{from} -> {to}: {paths:?}");
    } else {
        assert_eq!(paths, ["spec.pools"], "{from} -> {to}");
    }
}

const RSV: &str = "apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r, namespace: ns}\n";
