//! The seed's YAML documents load as they are and round-trip (parse → print → parse).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use irikit_api::{Object, compute::MachineClass, parse_yaml_documents};

fn copy_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/seed-examples.yaml")
}

fn shared_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/seed/examples.yaml")
}

#[test]
fn seed_copy_matches_shared_seed() {
    let copy = std::fs::read_to_string(copy_path()).unwrap();
    match std::fs::read_to_string(shared_path()) {
        Ok(shared) => assert_eq!(
            copy, shared,
            "api/tests/data/seed-examples.yaml differs from shared/seed/examples.yaml"
        ),
        Err(_) => {
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!(
                    "skip: shared/seed/examples.yaml not beside the checkout; using the copy only\n"
                ),
            );
        }
    }
}

#[test]
fn seed_documents_load_and_round_trip() {
    let text = std::fs::read_to_string(copy_path()).unwrap();
    let objects = parse_yaml_documents(&text).unwrap();
    let kinds: Vec<_> = objects.iter().map(|o| o.kind().as_str()).collect();
    assert_eq!(kinds, ["MachinePool", "MachineClass"]);
    for obj in &objects {
        let errors = irikit_api::validation::validate(obj);
        assert!(errors.is_empty(), "{}: {errors:?}", obj.key());
        let again = parse_yaml_documents(&obj.to_yaml()).unwrap();
        assert_eq!(again, vec![obj.clone()]);
    }
    let class: MachineClass = objects[1].clone().into_typed().unwrap();
    assert_eq!(class.capabilities["cpu"].value(), 4);
    assert_eq!(
        class.capabilities["memory"].value(),
        16 * 1024 * 1024 * 1024
    );
    let printed: Vec<String> = objects.iter().map(Object::to_yaml).collect();
    insta::assert_snapshot!(printed.join("---\n"), @r"
    apiVersion: compute.ironcore.dev/v1alpha1
    kind: MachinePool
    metadata:
      name: machinepool-sample
    spec:
      providerID: ironcore://shared
    status:
      availableMachineClasses:
      - name: machineclass-sample
    ---
    apiVersion: compute.ironcore.dev/v1alpha1
    capabilities:
      cpu: '4'
      memory: 16Gi
    kind: MachineClass
    metadata:
      name: machineclass-sample
    ");
}
