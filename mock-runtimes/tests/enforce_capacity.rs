//! `enforce_capacity`: with it, a CreateMachine that names no reservation must fit the host's
//! capacity (here the local storage) even while no reservation holds anything; without it
//! (the default) the mock takes it.
#![allow(clippy::unwrap_used)]

use iri_mock::{MockRuntime, classes::MachineClassConfig};
use iri_spec::machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient};

fn with_disk(gib: i64) -> machine::CreateMachineRequest {
    machine::CreateMachineRequest {
        machine: Some(machine::Machine {
            metadata: Some(Default::default()),
            spec: Some(machine::MachineSpec {
                class: "m".to_owned(),
                volumes: vec![machine::Volume {
                    name: "root".to_owned(),
                    device: "oda".to_owned(),
                    local_disk: Some(machine::LocalDisk {
                        size_bytes: gib << 30,
                        image: None,
                    }),
                    connection: None,
                }],
                ..Default::default()
            }),
            status: None,
        }),
    }
}

#[tokio::test]
async fn creates_beyond_capacity_fail_only_when_enforced() {
    for (enforce, second) in [(true, Some(tonic::Code::ResourceExhausted)), (false, None)] {
        let mock = MockRuntime::builder()
            .machine_classes([MachineClassConfig::new("m", 1, 1 << 30).quantity(4)])
            .local_storage_bytes(10 << 30)
            .enforce_capacity(enforce)
            .start_in_process()
            .await
            .unwrap();
        let mut c = MachineRuntimeClient::new(mock.machine_channel());
        c.create_machine(with_disk(6)).await.unwrap();
        let res = c.create_machine(with_disk(6)).await;
        assert_eq!(res.err().map(|e| e.code()), second, "enforce {enforce}");
        // Within capacity always fits.
        let small = c.create_machine(with_disk(1)).await;
        assert!(small.is_ok(), "enforce {enforce}: {small:?}");
    }
}
